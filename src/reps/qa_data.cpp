#include "reps/qa_data.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace longctx {

using nlohmann::json;

void jsonl_for_each(const std::string& path,
                    const std::function<void(const json&, const std::string&)>& on_line) {
  std::ifstream f(path, std::ios::binary);
  LCX_CHECK(f, "cannot open '{}': {}", path, std::strerror(errno));
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    lineno++;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, lineno);
    json j = json::parse(line, nullptr, false);
    LCX_CHECK(!j.is_discarded(), "{}: not valid JSON (line starts '{}')", where,
              line.substr(0, 40));
    on_line(j, where);
  }
  LCX_CHECK(!f.bad(), "error reading '{}'", path);
}

namespace {

const json& field(const json& j, const char* name, const std::string& where) {
  auto it = j.find(name);
  LCX_CHECK(it != j.end(), "{}: missing field \"{}\"", where, name);
  return *it;
}

std::string str_field(const json& j, const char* name, const std::string& where) {
  const json& v = field(j, name, where);
  LCX_CHECK(v.is_string(), "{}: field \"{}\" must be a string, got {}", where, name, v.type_name());
  return v.get<std::string>();
}

// An answer may be a string or a number (some datasets store years as numbers).
std::string answer_str(const json& v, const std::string& where, const char* name) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  fail("{}: field \"{}\" must hold strings, got {}", where, name, v.type_name());
}

std::vector<std::string> str_list(const json& v, const std::string& where, const char* name) {
  LCX_CHECK(v.is_array(), "{}: field \"{}\" must be a list of strings, got {}", where, name,
            v.type_name());
  std::vector<std::string> out;
  for (const json& e : v) out.push_back(answer_str(e, where, name));
  return out;
}

int hops_from_id(const std::string& id) {  // MuSiQue ids: "2hop__...", "3hop1__...", "4hop3__..."
  if (id.size() >= 4 && id[0] >= '1' && id[0] <= '9' && id.compare(1, 3, "hop") == 0) return id[0] - '0';
  return 0;
}

const char* kMusiqueKeys[] = {"id", "paragraphs", "question", "answer", "answer_aliases",
                              "answerable", "hops", "context_tokens", "length_bucket"};
const char* kLongBenchKeys[] = {"_id", "input", "context", "answers", "dataset"};

}  // namespace

QaExample qa_from_json(const json& j, QaFormat format, const std::string& where) {
  LCX_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  if (format == QaFormat::Auto) {
    if (j.contains("paragraphs")) format = QaFormat::Musique;
    else if (j.contains("input") && j.contains("context")) format = QaFormat::LongBench;
    else
      fail("{}: neither MuSiQue (needs \"paragraphs\", \"question\", \"answer\") nor LongBench "
           "(needs \"input\", \"context\", \"answers\")", where);
  }
  QaExample ex;
  if (format == QaFormat::Musique) {
    ex.dataset = "musique";
    ex.id = j.contains("id") ? answer_str(j["id"], where, "id") : where;
    ex.question = str_field(j, "question", where);
    ex.answer = answer_str(field(j, "answer", where), where, "answer");
    if (j.contains("answer_aliases")) ex.answer_aliases = str_list(j["answer_aliases"], where, "answer_aliases");
    if (j.contains("answerable")) {
      LCX_CHECK(j["answerable"].is_boolean(), "{}: field \"answerable\" must be true or false", where);
      ex.answerable = j["answerable"].get<bool>();
    }
    const json& ps = field(j, "paragraphs", where);
    LCX_CHECK(ps.is_array(), "{}: field \"paragraphs\" must be a list, got {}", where, ps.type_name());
    for (size_t i = 0; i < ps.size(); i++) {
      const json& p = ps[i];
      const std::string pw = fmt::format("{}: paragraphs[{}]", where, i);
      LCX_CHECK(p.is_object(), "{}: expected an object, got {}", pw, p.type_name());
      QaParagraph q;
      if (p.contains("idx")) {
        LCX_CHECK(p["idx"].is_number_integer(), "{}: field \"idx\" must be an integer", pw);
        q.idx = p["idx"].get<int>();
      } else {
        q.idx = int(i);
      }
      q.title = p.contains("title") && p["title"].is_string() ? p["title"].get<std::string>() : "";
      q.text = str_field(p, "paragraph_text", pw);
      if (p.contains("is_supporting")) {
        LCX_CHECK(p["is_supporting"].is_boolean(), "{}: field \"is_supporting\" must be true or false", pw);
        q.is_supporting = p["is_supporting"].get<bool>();
      }
      ex.paragraphs.push_back(std::move(q));
    }
    ex.hops = hops_from_id(ex.id);
    if (j.contains("hops")) {
      LCX_CHECK(j["hops"].is_number_integer(), "{}: field \"hops\" must be an integer", where);
      ex.hops = j["hops"].get<int>();
    }
    if (j.contains("context_tokens") && j["context_tokens"].is_number_integer())
      ex.context_tokens = j["context_tokens"].get<int64_t>();
    if (j.contains("length_bucket") && j["length_bucket"].is_number_integer())
      ex.length_bucket = j["length_bucket"].get<int64_t>();
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool known = false;
      for (const char* k : kMusiqueKeys) known |= it.key() == k;
      if (!known) ex.extra[it.key()] = it.value();
    }
  } else {
    ex.id = j.contains("_id") ? answer_str(j["_id"], where, "_id") : where;
    ex.question = str_field(j, "input", where);
    ex.context = str_field(j, "context", where);
    std::vector<std::string> answers = str_list(field(j, "answers", where), where, "answers");
    LCX_CHECK(!answers.empty(), "{}: field \"answers\" is empty", where);
    ex.answer = answers[0];
    ex.answer_aliases.assign(answers.begin() + 1, answers.end());
    ex.dataset = j.contains("dataset") && j["dataset"].is_string() ? j["dataset"].get<std::string>() : "longbench";
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool known = false;
      for (const char* k : kLongBenchKeys) known |= it.key() == k;
      if (!known) ex.extra[it.key()] = it.value();
    }
  }
  return ex;
}

std::vector<QaExample> qa_read(const std::string& path, QaFormat format) {
  std::vector<QaExample> out;
  jsonl_for_each(path, [&](const json& j, const std::string& where) {
    out.push_back(qa_from_json(j, format, where));
  });
  LCX_CHECK(!out.empty(), "'{}': no examples (empty file?)", path);
  return out;
}

json qa_to_json(const QaExample& ex) {
  json j = json::object();
  j["id"] = ex.id;
  json ps = json::array();
  if (ex.paragraphs.empty() && !ex.context.empty()) {
    ps.push_back({{"idx", 0}, {"title", ""}, {"paragraph_text", ex.context}, {"is_supporting", true}});
  }
  for (const QaParagraph& p : ex.paragraphs)
    ps.push_back({{"idx", p.idx}, {"title", p.title}, {"paragraph_text", p.text}, {"is_supporting", p.is_supporting}});
  j["paragraphs"] = std::move(ps);
  j["question"] = ex.question;
  j["answer"] = ex.answer;
  j["answer_aliases"] = ex.answer_aliases;
  j["answerable"] = ex.answerable;
  if (ex.hops > 0) j["hops"] = ex.hops;
  if (ex.context_tokens > 0) j["context_tokens"] = ex.context_tokens;
  if (ex.length_bucket > 0) j["length_bucket"] = ex.length_bucket;
  for (auto it = ex.extra.begin(); it != ex.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

void qa_write(const std::string& path, const std::vector<QaExample>& examples) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    LCX_CHECK(f, "cannot write '{}': {}", tmp, std::strerror(errno));
    for (const QaExample& ex : examples) f << qa_to_json(ex).dump() << "\n";
    f.flush();
    LCX_CHECK(f.good(), "error writing '{}'", tmp);
  }
  LCX_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '{}' to '{}': {}", tmp, path,
            std::strerror(errno));
}

std::string qa_context(const QaExample& ex) {
  if (ex.paragraphs.empty()) return ex.context;
  std::string out;
  for (size_t i = 0; i < ex.paragraphs.size(); i++) {
    if (i) out += "\n\n";
    out += fmt::format("Passage {}: {}\n", i + 1, ex.paragraphs[i].title);
    out += ex.paragraphs[i].text;
  }
  return out;
}

std::vector<std::string> qa_golds(const QaExample& ex) {
  std::vector<std::string> g{ex.answer};
  g.insert(g.end(), ex.answer_aliases.begin(), ex.answer_aliases.end());
  return g;
}

SampleRecord sample_from_json(const json& j, const std::string& where) {
  LCX_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  SampleRecord s;
  s.id = answer_str(field(j, "id", where), where, "id");
  const json& p = field(j, "path", where);
  LCX_CHECK(p.is_number_integer() && p.get<int64_t>() >= 0 && p.get<int64_t>() <= 1000000000,
            "{}: field \"path\" must be an integer >= 0, got {}",
            where, p.dump());
  s.path = p.get<int>();
  s.text = str_field(j, "text", where);
  const json& t = field(j, "temperature", where);
  LCX_CHECK(t.is_number(), "{}: field \"temperature\" must be a number, got {}", where, t.type_name());
  s.temperature = t.get<double>();
  const json& sd = field(j, "seed", where);
  LCX_CHECK(sd.is_number_unsigned() || (sd.is_number_integer() && sd.get<int64_t>() >= 0),
            "{}: field \"seed\" must be an integer >= 0, got {}", where, sd.dump());
  s.seed = sd.get<uint64_t>();
  s.where = where;
  return s;
}

std::vector<SampleRecord> sample_read(const std::string& path) {
  std::vector<SampleRecord> out;
  jsonl_for_each(path, [&](const json& j, const std::string& where) { out.push_back(sample_from_json(j, where)); });
  return out;
}

json sample_to_json(const SampleRecord& s) {
  return json{{"id", s.id}, {"path", s.path}, {"text", s.text}, {"temperature", s.temperature}, {"seed", s.seed}};
}

}  // namespace longctx
