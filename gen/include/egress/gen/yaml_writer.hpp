#pragma once
/// A small ordered YAML document model and a deterministic block-style emitter for the
/// rendered manifests: keys keep insertion order, strings are quoted only when a YAML 1.1
/// or 1.2 reader could take them for something else, output is byte-stable.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace egress::gen {

/// One YAML value: a scalar (string or integer), a mapping or a sequence.
class node {
public:
  enum class kind { string, integer, boolean, map, seq };

  node() : kind_(kind::map) {}
  /// Scalars.
  static node str(std::string s);
  static node integer(std::int64_t v);
  static node boolean(bool v);
  /// Empty containers ({} and [] when left empty).
  static node map();
  static node seq();
  /// A sequence of strings.
  static node str_seq(const std::vector<std::string>& items);

  /// Mapping: appends `key: value` (keys are emitted in insertion order). Returns *this.
  node& set(std::string key, node value);
  /// Sequence: appends an item. Returns *this.
  node& push(node value);

  kind type() const noexcept { return kind_; }
  bool empty() const noexcept { return entries_.empty() && items_.empty(); }

  /// Emits this node as a YAML document body (no "---"), two-space indentation.
  std::string emit() const;

private:
  friend class emitter;
  kind kind_;
  std::string scalar_;
  std::vector<std::pair<std::string, node>> entries_;
  std::vector<node> items_;
};

/// Quotes `s` for YAML when a plain scalar would be read differently (empty, special
/// words like "yes"/"null", numbers, leading indicators, ": ", " #", colons, quotes).
std::string quote_if_needed(std::string_view s);

}  // namespace egress::gen
