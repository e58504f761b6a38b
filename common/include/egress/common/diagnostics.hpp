#pragma once
/// Compiler-style diagnostics for configuration problems: collected, sorted by position,
/// printed all at once ("config/x.yaml:14:7: error: allowlist[2].host: ...").

#include <iosfwd>
#include <string>
#include <vector>

namespace egress::common {

/// Severity of a diagnostic; only errors make a config unusable.
enum class severity { error, warning };

/// One problem found in a file. Line and column are 1-based (yaml-cpp marks are 0-based;
/// the reader converts). Line 0 means "the whole file".
struct diagnostic {
  std::string file;
  int line = 0;
  int column = 0;
  severity level = severity::error;
  std::string path;     ///< field path, e.g. "allowlist[2].host"; may be empty
  std::string message;  ///< one sentence, lower case start, no trailing period
};

/// A list of diagnostics for one load.
class diagnostics {
public:
  void add(diagnostic d) { items_.push_back(std::move(d)); }
  void error(std::string file, int line, int column, std::string path, std::string message);
  void warning(std::string file, int line, int column, std::string path, std::string message);

  bool has_errors() const noexcept;
  const std::vector<diagnostic>& items() const noexcept { return items_; }
  /// Sorts by file, line, column (stable), so output follows file order.
  void sort();
  /// Prints every diagnostic, one per line: "FILE:LINE:COL: error: PATH: MESSAGE".
  void print(std::ostream& out) const;

private:
  std::vector<diagnostic> items_;
};

/// Formats one diagnostic as printed by `diagnostics::print` (no newline).
std::string format(const diagnostic& d);

}  // namespace egress::common
