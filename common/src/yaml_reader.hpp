#pragma once
// A checked reader over yaml-cpp nodes: knows each mapping's allowed keys, reports
// unknown and duplicate keys (yaml-cpp 0.7 keeps duplicates silently), type errors and
// missing required keys as diagnostics with 1-based positions. Private to common/.

#include "egress/common/diagnostics.hpp"

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace egress::common::detail {

/// Diagnostics sink bound to one file.
class yaml_reader {
public:
  yaml_reader(std::string file, diagnostics& diags) : file_(std::move(file)), diags_(diags) {}

  void error(const YAML::Mark& m, const std::string& path, std::string message);
  void error(const YAML::Node& n, const std::string& path, std::string message) { error(n.Mark(), path, std::move(message)); }
  void warning(const YAML::Mark& m, const std::string& path, std::string message);

  /// Scalars. Each reports a type error at the node and returns nullopt on mismatch.
  std::optional<std::string> string(const YAML::Node& n, const std::string& path);
  std::optional<std::int64_t> integer(const YAML::Node& n, const std::string& path, std::int64_t min, std::int64_t max);
  std::optional<bool> boolean(const YAML::Node& n, const std::string& path);
  /// A sequence node (reports "expected a list").
  bool is_sequence(const YAML::Node& n, const std::string& path);

  const std::string& file() const noexcept { return file_; }
  diagnostics& diags() noexcept { return diags_; }

private:
  std::string file_;
  diagnostics& diags_;
};

/// One mapping with a fixed set of allowed keys.
class map_view {
public:
  /// Reports a non-mapping node, duplicate keys and unknown keys (suggesting the closest
  /// allowed key). `path` names the mapping ("" for the document root).
  map_view(yaml_reader& r, const YAML::Node& node, std::string path, std::initializer_list<std::string_view> allowed);

  bool ok() const noexcept { return ok_; }
  /// The value of `key`, or nullopt when absent (or null, "key:" with nothing).
  std::optional<YAML::Node> get(std::string_view key) const;
  /// The value of `key`; reports "missing required key" at the mapping when absent.
  std::optional<YAML::Node> require(std::string_view key) const;
  /// "path.key" (or "key" at the root).
  std::string child(std::string_view key) const;
  const YAML::Node& node() const noexcept { return node_; }
  const std::string& path() const noexcept { return path_; }
  /// Keys in file order (first occurrence), for maps of free-form keys.
  std::vector<std::pair<YAML::Node, YAML::Node>> entries() const;

private:
  yaml_reader& r_;
  YAML::Node node_;
  std::string path_;
  bool ok_ = false;
};

/// "path[i]".
std::string index_path(const std::string& path, std::size_t i);

}  // namespace egress::common::detail
