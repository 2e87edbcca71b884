#include "data/corpus.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace longctx {

CorpusFormat corpus_format_parse(const std::string& name) {
  if (name == "auto") return CorpusFormat::Auto;
  if (name == "text") return CorpusFormat::Text;
  if (name == "jsonl") return CorpusFormat::Jsonl;
  if (name == "brown") return CorpusFormat::Brown;
  fail("unknown corpus format '{}' (expected auto, text, jsonl or brown)", name);
}

const char* corpus_format_name(CorpusFormat f) {
  switch (f) {
    case CorpusFormat::Auto: return "auto";
    case CorpusFormat::Text: return "text";
    case CorpusFormat::Jsonl: return "jsonl";
    case CorpusFormat::Brown: return "brown";
  }
  return "?";
}

int64_t utf8_invalid_offset(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    uint8_t c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return int64_t(i);  // stray continuation byte, overlong lead (C0/C1) or F5..FF
    }
    if (i + len > n) return int64_t(i);
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return int64_t(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return int64_t(i);
    i += len;
  }
  return -1;
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LCX_CHECK(f, "cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  LCX_CHECK(!f.bad(), "error reading '{}'", path);
  return ss.str();
}

void check_utf8(const std::string& path, std::string_view text) {
  int64_t off = utf8_invalid_offset(text);
  LCX_CHECK(off < 0, "'{}': invalid UTF-8 at byte offset {} (byte 0x{:02X}); convert the file to "
            "UTF-8 (e.g. iconv -f latin1 -t utf-8)", path, off, uint8_t(text[size_t(off)]));
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Splits on ASCII whitespace.
std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) i++;
    size_t j = i;
    while (j < s.size() && !is_space(s[j])) j++;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool ends_with(std::string_view s, std::string_view suf) {
  return s.size() >= suf.size() && s.substr(s.size() - suf.size()) == suf;
}

bool looks_jsonl_path(const std::string& path) {
  return ends_with(path, ".jsonl") || ends_with(path, ".json");
}

void read_jsonl(const std::string& path, const std::string& content, std::vector<Document>& out) {
  size_t line_no = 0, pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + pos, end - pos);
    line_no++;
    pos = end + 1;
    if (is_blank(line)) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("'{}' line {}: invalid JSON ({})", path, line_no, e.what());
    }
    LCX_CHECK(j.is_object(), "'{}' line {}: expected a JSON object with a \"text\" field, got {}",
              path, line_no, j.type_name());
    auto it = j.find("text");
    LCX_CHECK(it != j.end(), "'{}' line {}: missing field \"text\"", path, line_no);
    LCX_CHECK(it->is_string(), "'{}' line {}: field \"text\" must be a string, got {}", path, line_no,
              it->type_name());
    std::string text = it->get<std::string>();
    if (!is_blank(text)) out.push_back({fmt::format("{}:{}", path, line_no), std::move(text)});
  }
}

void add_document(const std::string& path, std::string content, CorpusFormat f,
                  std::vector<Document>& out) {
  check_utf8(path, content);
  switch (f) {
    case CorpusFormat::Jsonl: read_jsonl(path, content, out); return;
    case CorpusFormat::Brown: content = brown_detokenize(content); break;
    default: break;
  }
  if (!is_blank(content)) out.push_back({path, std::move(content)});
}

CorpusFormat detect_file(const std::string& path, std::string_view content) {
  if (looks_jsonl_path(path)) return CorpusFormat::Jsonl;
  if (brown_detect(content)) return CorpusFormat::Brown;
  return CorpusFormat::Text;
}

// All regular files under `dir`, recursively, sorted, hidden entries skipped.
std::vector<std::string> list_folder(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
  LCX_CHECK(!ec, "cannot list folder '{}': {}", dir, ec.message());
  for (; it != end; it.increment(ec)) {
    LCX_CHECK(!ec, "cannot list folder '{}': {}", dir, ec.message());
    std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file()) files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

bool brown_detect(std::string_view text) {
  // look at the first 200 whitespace-separated tokens of the first 16 KiB
  auto toks = split_ws(text.substr(0, 16384));
  if (toks.size() > 200) toks.resize(200);
  if (toks.size() < 5) return false;
  size_t ok = 0;
  for (auto t : toks) {
    size_t slash = t.rfind('/');
    if (slash == std::string_view::npos || slash == 0 || slash + 1 == t.size()) continue;
    std::string_view tag = t.substr(slash + 1);
    bool good = std::all_of(tag.begin(), tag.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             std::strchr("$*+-.,:;()'`", c) != nullptr;
    });
    ok += good;
  }
  return ok * 10 >= toks.size() * 9;
}

std::string brown_detokenize(std::string_view tagged) {
  std::string out;
  // split into paragraphs (blocks separated by blank lines), each into lines
  std::vector<std::vector<std::string_view>> paras(1);
  size_t pos = 0;
  while (pos <= tagged.size()) {
    size_t end = tagged.find('\n', pos);
    if (end == std::string_view::npos) end = tagged.size();
    std::string_view line = tagged.substr(pos, end - pos);
    pos = end + 1;
    if (is_blank(line)) {
      if (!paras.back().empty()) paras.emplace_back();
    } else {
      paras.back().push_back(line);
    }
  }
  auto word_tag = [](std::string_view t, std::string_view& word, std::string_view& tag) {
    size_t slash = t.rfind('/');
    if (slash == std::string_view::npos || slash == 0) {
      word = t;
      tag = {};
    } else {
      word = t.substr(0, slash);
      tag = t.substr(slash + 1);
    }
  };
  std::string para;
  bool single_open = false, glue_next = false;
  auto emit_para = [&]() {
    if (para.empty()) return;
    if (!out.empty()) out += "\n\n";
    out += para;
    para.clear();
    single_open = false;
    glue_next = false;
  };
  for (auto& lines : paras) {
    for (auto line : lines) {
      auto toks = split_ws(line);
      if (toks.empty()) continue;
      bool headline = true;
      for (auto t : toks) {
        std::string_view w, tag;
        word_tag(t, w, tag);
        if (!ends_with(tag, "-hl")) headline = false;
      }
      if (headline) emit_para();
      for (auto t : toks) {
        std::string_view w, tag;
        word_tag(t, w, tag);
        if (w.empty()) continue;
        bool open = false, close = false;
        std::string_view text = w;
        if (w == "``") {
          text = "\"";
          open = true;
        } else if (w == "''") {
          text = "\"";
          close = true;
        } else if (w == "'") {
          close = single_open;
          open = !single_open;
          single_open = !single_open;
        } else if (w == "(" || w == "[") {
          open = true;
        } else if (w == "." || w == "," || w == ";" || w == ":" || w == "?" || w == "!" ||
                   w == ")" || w == "]") {
          close = true;
        }
        // "Jr./np ./." → "Jr." (the sentence period after an abbreviation's period)
        if (w == "." && !para.empty() && para.back() == '.') continue;
        if (!close && !para.empty() && !glue_next) para += ' ';
        para += text;
        glue_next = open;
      }
      if (headline) emit_para();
    }
    emit_para();
  }
  return out;
}

std::vector<Document> corpus_read(const std::vector<std::string>& inputs, CorpusFormat format) {
  LCX_CHECK(!inputs.empty(), "no input given (pass --input FILE_OR_FOLDER)");
  std::vector<Document> docs;
  for (const auto& input : inputs) {
    std::error_code ec;
    auto st = fs::status(input, ec);
    LCX_CHECK(fs::exists(st), "input '{}': no such file or directory", input);
    if (fs::is_directory(st)) {
      auto files = list_folder(input);
      std::vector<std::pair<std::string, std::string>> contents;  // (path, bytes)
      std::vector<CorpusFormat> formats;
      bool any_brown = false;
      for (auto& f : files) {
        std::string c = read_file(f);
        CorpusFormat ff = format;
        if (format == CorpusFormat::Auto) ff = detect_file(f, c);
        if (format == CorpusFormat::Brown && !brown_detect(c)) ff = CorpusFormat::Auto;  // skip
        any_brown |= (ff == CorpusFormat::Brown);
        contents.emplace_back(f, std::move(c));
        formats.push_back(ff);
      }
      for (size_t i = 0; i < files.size(); i++) {
        // a Brown corpus folder: only the tagged files are documents
        if ((format == CorpusFormat::Auto && any_brown) || format == CorpusFormat::Brown)
          if (formats[i] != CorpusFormat::Brown) continue;
        add_document(contents[i].first, std::move(contents[i].second), formats[i], docs);
      }
    } else if (fs::is_regular_file(st)) {
      std::string c = read_file(input);
      CorpusFormat ff = format == CorpusFormat::Auto ? detect_file(input, c) : format;
      if (format == CorpusFormat::Brown)
        LCX_CHECK(brown_detect(c), "input '{}': does not look like Brown word/tag text (use "
                  "--format text or auto)", input);
      add_document(input, std::move(c), ff, docs);
    } else {
      fail("input '{}': not a regular file or directory", input);
    }
  }
  std::string list = inputs[0];
  if (inputs.size() > 1) list += fmt::format(" and {} more", inputs.size() - 1);
  LCX_CHECK(!docs.empty(), "empty corpus: no non-empty documents found in {} (format {})", list,
            corpus_format_name(format));
  return docs;
}

}  // namespace longctx
