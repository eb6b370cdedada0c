// sae-info: inspect a stream (header, rows, statistics) and verify it.
#include "cli.h"
#include "stream.h"
int main(int argc, char** argv) {
  return sae::cli::run("sae-info", argc, argv, [](int argc, char** argv) {
    namespace po = sae::cli::po;
    po::options_description desc("Options");
    desc.add_options()("input", po::value<std::vector<std::string>>()->multitoken(), "input streams");
    po::positional_options_description pos;
    pos.add("input", -1);
    auto vm = sae::cli::parse(argc, argv, desc, "[options] [FILE...]", "Inspect a stream.", &pos);
    sae::StreamReader r(sae::cli::input_files(vm));
    sae::Batch b;
    while (r.next(b)) {}
    printf("rows %lld d %lld\n", (long long)r.rows_read(), (long long)r.header().d);
    return 0;
  });
}
