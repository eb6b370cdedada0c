// sae-steer's LLM judge (steer/judge.h).
#include "steer/judge.h"

#include <cctype>
#include <cstdlib>

#include "base/errors.h"

namespace sae {

const char* aspect_name(JudgeAspect a) {
  switch (a) {
    case JudgeAspect::concept: return "concept";
    case JudgeAspect::instruction: return "instruction";
    case JudgeAspect::fluency: return "fluency";
  }
  return "?";
}

namespace {

// Reads a number 0..2 at s[p] (after spaces); NaN if there is none.
double number_at(const std::string& s, size_t p, size_t* end = nullptr) {
  while (p < s.size() && (s[p] == ' ' || s[p] == '\t')) p++;
  if (p >= s.size() || !std::isdigit(static_cast<unsigned char>(s[p]))) return JudgeRatings::nan;
  const char* begin = s.c_str() + p;
  char* e = nullptr;
  const double v = std::strtod(begin, &e);
  if (end) *end = p + size_t(e - begin);
  return v >= 0 && v <= 2 ? v : JudgeRatings::nan;
}

// The value of the last "[[N]]" at or after `from`; NaN if none.
double last_bracketed(const std::string& s, size_t from) {
  for (size_t p = s.rfind("[["); p != std::string::npos && p >= from; p = p == 0 ? std::string::npos : s.rfind("[[", p - 1)) {
    size_t end = 0;
    const double v = number_at(s, p + 2, &end);
    if (!std::isnan(v)) {
      while (end < s.size() && s[end] == ' ') end++;
      if (s.compare(end, 2, "]]") == 0) return v;
    }
    if (p == 0) break;
  }
  return JudgeRatings::nan;
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size()) s.replace(p, from.size(), to);
  return s;
}

std::string one_line(const std::string& s) {
  std::string o;
  for (char c : s.substr(0, 80)) o += (c == '\n' || c == '\r') ? ' ' : c;
  return s.size() > 80 ? o + "..." : o;
}

}  // namespace

double parse_rating(const std::string& answer) {
  const std::string low = lower(answer);
  // The last "rating:" with [[N]] after it (before any later "rating:").
  for (size_t p = low.rfind("rating:"); p != std::string::npos; p = p == 0 ? std::string::npos : low.rfind("rating:", p - 1)) {
    size_t q = p + 7;
    while (q < low.size() && (low[q] == ' ' || low[q] == '*')) q++;
    if (low.compare(q, 2, "[[") == 0) {
      size_t end = 0;
      const double v = number_at(low, q + 2, &end);
      if (!std::isnan(v)) return v;
    }
    if (p == 0) break;
  }
  const double b = last_bracketed(low, 0);
  if (!std::isnan(b)) return b;
  for (size_t p = low.rfind("rating:"); p != std::string::npos; p = p == 0 ? std::string::npos : low.rfind("rating:", p - 1)) {
    size_t q = p + 7;
    while (q < low.size() && (low[q] == ' ' || low[q] == '*')) q++;
    const double v = number_at(low, q);
    if (!std::isnan(v)) return v;
    if (p == 0) break;
  }
  return JudgeRatings::nan;
}

double harmonic_mean(double a, double b, double c) {
  if (std::isnan(a) || std::isnan(b) || std::isnan(c)) return JudgeRatings::nan;
  if (a <= 0 || b <= 0 || c <= 0) return 0;
  return 3.0 / (1.0 / a + 1.0 / b + 1.0 / c);
}

// The defaults, after AxBench's three judges (written anew). The mock server's judge mode
// (tests/support/mock_llm_server.h) reads the "Concept: " line, the <instruction> block and the
// <text> block: keep them if these change.
const std::string& judge_template(JudgeAspect a) {
  static const std::string concept_t =
      "Please act as an impartial judge and rate how much the text below involves a given concept.\n"
      "\n"
      "Concept: {concept}\n"
      "\n"
      "<text>\n{text}\n</text>\n"
      "\n"
      "Give 0 if the concept is absent from the text, 1 if it is only loosely related or mentioned in passing, "
      "and 2 if the text clearly involves the concept. Judge only the concept, not the fluency or the quality "
      "of the text.\n"
      "Explain in one short sentence, then give the rating on a line of its own exactly as \"Rating: [[N]]\", "
      "N being 0, 1 or 2.";
  static const std::string instruction_t =
      "Please act as an impartial judge and rate how well a text follows on from the text it continues.\n"
      "\n"
      "<instruction>\n{instruction}\n</instruction>\n"
      "\n"
      "<text>\n{text}\n</text>\n"
      "\n"
      "The text above was written as the continuation of the instruction (a prompt to continue). Give 0 if "
      "it ignores it or is unrelated, 1 if it is only loosely connected, and 2 if it continues or answers it "
      "sensibly. Judge only the relevance, not the fluency.\n"
      "Explain in one short sentence, then give the rating on a line of its own exactly as \"Rating: [[N]]\", "
      "N being 0, 1 or 2.";
  static const std::string fluency_t =
      "Please act as an impartial judge and rate the fluency of the text below.\n"
      "\n"
      "<text>\n{text}\n</text>\n"
      "\n"
      "Give 0 if it is not fluent language (broken, repetitive, gibberish), 1 if it is somewhat fluent with "
      "clear errors or awkward repetition, and 2 if it is fluent, coherent language. The text may stop "
      "mid-sentence: do not count that against it. Judge only the fluency, not the content.\n"
      "Explain in one short sentence, then give the rating on a line of its own exactly as \"Rating: [[N]]\", "
      "N being 0, 1 or 2.";
  switch (a) {
    case JudgeAspect::concept: return concept_t;
    case JudgeAspect::instruction: return instruction_t;
    case JudgeAspect::fluency: return fluency_t;
  }
  return fluency_t;
}

std::string judge_prompt(JudgeAspect a, const std::string& concept, const std::string& instruction,
                         const std::string& text) {
  // {text} last, so that a continuation holding "{concept}" is never expanded.
  std::string s = replace_all(judge_template(a), "{concept}", concept);
  s = replace_all(s, "{instruction}", instruction);
  return replace_all(s, "{text}", text);
}

std::vector<llm::Request> judge_requests(const std::string& concept, const std::string& instruction,
                                         const std::string& text) {
  std::vector<llm::Request> r;
  for (JudgeAspect a : {JudgeAspect::concept, JudgeAspect::instruction, JudgeAspect::fluency}) {
    llm::Request q;
    q.messages.push_back({"user", judge_prompt(a, concept, instruction, text)});
    q.temperature = 0;
    q.max_tokens = 256;
    r.push_back(std::move(q));
  }
  return r;
}

JudgeRatings ratings_from_answers(const std::string& concept_answer, const std::string& instruction_answer,
                                  const std::string& fluency_answer) {
  JudgeRatings j;
  const std::string* answers[3] = {&concept_answer, &instruction_answer, &fluency_answer};
  double* out[3] = {&j.concept, &j.instruction, &j.fluency};
  const JudgeAspect aspects[3] = {JudgeAspect::concept, JudgeAspect::instruction, JudgeAspect::fluency};
  for (int k = 0; k < 3; k++) {
    *out[k] = parse_rating(*answers[k]);
    if (std::isnan(*out[k])) j.failed.push_back(std::string(aspect_name(aspects[k])) + ": '" + one_line(*answers[k]) + "'");
  }
  j.harmonic = harmonic_mean(j.concept, j.instruction, j.fluency);
  return j;
}

std::vector<JudgeRatings> judge_all(llm::Client& client, const std::string& concept, const std::vector<JudgeItem>& items) {
  std::vector<llm::Request> requests;
  for (const JudgeItem& it : items)
    for (llm::Request& r : judge_requests(concept, it.instruction, it.text)) requests.push_back(std::move(r));
  const std::vector<llm::Response> answers = client.run(requests);
  const std::string err = llm::first_error(answers);
  if (!err.empty()) {
    if (client.options().dry_run) return {};
    throw InputError("judge: " + err);
  }
  std::vector<JudgeRatings> out;
  for (size_t i = 0; i < items.size(); i++)
    out.push_back(ratings_from_answers(answers[3 * i].text, answers[3 * i + 1].text, answers[3 * i + 2].text));
  return out;
}

}  // namespace sae
