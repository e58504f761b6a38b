#include "yaml_reader.hpp"

#include <algorithm>
#include <charconv>
#include <set>

namespace egress::common::detail {
namespace {

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Scalar: return "\"" + n.Scalar() + "\"";
    default: return "an undefined value";
  }
}

// A scalar written without quotes (tag "?") may be a number or boolean; a quoted one
// (tag "!") is always a string.
bool plain(const YAML::Node& n) { return n.Tag() == "?"; }

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t prev = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cur = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
      prev = cur;
    }
  }
  return row[b.size()];
}

}  // namespace

void yaml_reader::error(const YAML::Mark& m, const std::string& path, std::string message) {
  diags_.error(file_, m.line + 1, m.column + 1, path, std::move(message));
}

void yaml_reader::warning(const YAML::Mark& m, const std::string& path, std::string message) {
  diags_.warning(file_, m.line + 1, m.column + 1, path, std::move(message));
}

std::optional<std::string> yaml_reader::string(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) {
    error(n, path, "expected a string, got " + describe(n));
    return std::nullopt;
  }
  return n.Scalar();
}

std::optional<std::int64_t> yaml_reader::integer(const YAML::Node& n, const std::string& path, std::int64_t min,
                                                 std::int64_t max) {
  const std::string range = " (" + std::to_string(min) + "-" + std::to_string(max) + ")";
  if (!n.IsScalar() || !plain(n)) {
    error(n, path, "expected an integer" + range + ", got " + std::string(n.IsScalar() ? "the string " : "") + describe(n));
    return std::nullopt;
  }
  const std::string& s = n.Scalar();
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) {
    error(n, path, "integer " + s + " is out of range" + range);
    return std::nullopt;
  }
  if (ec != std::errc{} || ptr != s.data() + s.size() || s.empty()) {
    error(n, path, "expected an integer" + range + ", got " + describe(n));
    return std::nullopt;
  }
  if (v < min || v > max) {
    error(n, path, "integer " + s + " is out of range" + range);
    return std::nullopt;
  }
  return v;
}

std::optional<bool> yaml_reader::boolean(const YAML::Node& n, const std::string& path) {
  if (n.IsScalar() && plain(n)) {
    if (n.Scalar() == "true") return true;
    if (n.Scalar() == "false") return false;
  }
  error(n, path, std::string("expected true or false, got ") + (n.IsScalar() && !plain(n) ? "the string " : "") + describe(n));
  return std::nullopt;
}

bool yaml_reader::is_sequence(const YAML::Node& n, const std::string& path) {
  if (n.IsSequence()) return true;
  error(n, path, "expected a list, got " + describe(n));
  return false;
}

map_view::map_view(yaml_reader& r, const YAML::Node& node, std::string path,
                   std::initializer_list<std::string_view> allowed)
    : r_(r), node_(node), path_(std::move(path)) {
  if (!node.IsMap()) {
    r_.error(node, path_, "expected a mapping, got " + describe(node));
    return;
  }
  ok_ = true;
  std::set<std::string> seen;
  for (const auto& kv : node) {
    // Copies: yaml-cpp's iterator yields a temporary pair, so references into it dangle.
    const YAML::Node key = kv.first;
    if (!key.IsScalar()) {
      r_.error(key, path_, "mapping keys must be strings");
      continue;
    }
    const std::string& k = key.Scalar();
    if (!seen.insert(k).second) {
      r_.error(key, child(k), "duplicate key \"" + k + "\" (the first one would win silently)");
      continue;
    }
    if (allowed.size() == 0) continue;
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      std::string best;
      std::size_t best_d = 3;
      for (auto a : allowed) {
        std::size_t d = edit_distance(k, a);
        if (d < best_d) {
          best_d = d;
          best = std::string(a);
        }
      }
      std::string msg = "unknown key \"" + k + "\"";
      if (!best.empty()) msg += "; did you mean \"" + best + "\"?";
      r_.error(key, child(k), std::move(msg));
    }
  }
}

std::optional<YAML::Node> map_view::get(std::string_view key) const {
  if (!ok_) return std::nullopt;
  for (const auto& kv : node_) {
    const YAML::Node k = kv.first;
    if (k.IsScalar() && k.Scalar() == key) {
      YAML::Node v = kv.second;
      if (v.IsNull()) return std::nullopt;
      return v;
    }
  }
  return std::nullopt;
}

std::optional<YAML::Node> map_view::require(std::string_view key) const {
  auto v = get(key);
  if (!v && ok_) r_.error(node_, path_, "missing required key \"" + std::string(key) + "\"");
  return v;
}

std::string map_view::child(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

std::vector<std::pair<YAML::Node, YAML::Node>> map_view::entries() const {
  std::vector<std::pair<YAML::Node, YAML::Node>> out;
  if (!ok_) return out;
  std::set<std::string> seen;
  for (const auto& kv : node_) {
    YAML::Node k = kv.first;
    if (k.IsScalar() && seen.insert(k.Scalar()).second) out.emplace_back(k, YAML::Node(kv.second));
  }
  return out;
}

std::string index_path(const std::string& path, std::size_t i) { return path + "[" + std::to_string(i) + "]"; }

}  // namespace egress::common::detail
