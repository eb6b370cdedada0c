// sae-steer's optional LLM judge, after AxBench: an LLM rates each continuation 0-2 on three
// aspects, each asked in a prompt of its own so that one rating does not colour another:
//   concept      does the text involve the concept (--judge-concept)?
//   instruction  does the text follow on from the prompt it continues?
//   fluency      is the text fluent, coherent language?
// and their harmonic mean (0 when any is 0: a steered text that loses the prompt or its fluency
// scores 0 however much of the concept it holds). The prompts end by asking for "Rating: [[N]]";
// docs/steer.md shows them. Requests go through the LLM client (llm/llm.h), all continuations'
// at once, --llm-parallel in flight.
#pragma once
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "llm/llm.h"

namespace sae {

struct JudgeRatings {
  static constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  double concept = nan, instruction = nan, fluency = nan;
  double harmonic = nan;  // of the three; NaN when one is missing
  std::vector<std::string> failed;  // aspects whose answer held no rating ("concept: '<answer>'")
};

enum class JudgeAspect { concept, instruction, fluency };
const char* aspect_name(JudgeAspect a);

// The rating in an answer: the number in the last "Rating: [[N]]", else the last "[[N]]", else the
// last "Rating: N", with N 0, 1 or 2 (a decimal such as 1.5 is kept). NaN when there is none, or
// it is out of range.
double parse_rating(const std::string& answer);

// The harmonic mean of the three, 0 when any is 0, NaN when any is NaN.
double harmonic_mean(double a, double b, double c);

// The prompt templates; {concept}, {instruction} and {text} are replaced.
const std::string& judge_template(JudgeAspect a);
std::string judge_prompt(JudgeAspect a, const std::string& concept, const std::string& instruction,
                         const std::string& text);

// One request per aspect (concept, instruction, fluency) for the continuation `text` of the prompt
// `instruction`: temperature 0, max_tokens 256.
std::vector<llm::Request> judge_requests(const std::string& concept, const std::string& instruction,
                                         const std::string& text);

struct JudgeItem {
  std::string instruction, text;  // the prompt, and the continuation under judgement
};

// Rates every item, all requests through one client batch. An answer without a rating is recorded
// in `failed` (its rating NaN), never thrown. A failed request (connection, HTTP error, budget) is
// an InputError naming it, thrown after the requests in flight are done (and cached).
std::vector<JudgeRatings> judge_all(llm::Client& client, const std::string& concept, const std::vector<JudgeItem>& items);

// Ratings from the three answers (concept, instruction, fluency).
JudgeRatings ratings_from_answers(const std::string& concept_answer, const std::string& instruction_answer,
                                  const std::string& fluency_answer);

}  // namespace sae
