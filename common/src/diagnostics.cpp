#include "egress/common/diagnostics.hpp"

#include <algorithm>
#include <ostream>

namespace egress::common {

void diagnostics::error(std::string file, int line, int column, std::string path, std::string message) {
  items_.push_back({std::move(file), line, column, severity::error, std::move(path), std::move(message)});
}

void diagnostics::warning(std::string file, int line, int column, std::string path, std::string message) {
  items_.push_back({std::move(file), line, column, severity::warning, std::move(path), std::move(message)});
}

bool diagnostics::has_errors() const noexcept {
  return std::any_of(items_.begin(), items_.end(), [](const diagnostic& d) { return d.level == severity::error; });
}

void diagnostics::sort() {
  std::stable_sort(items_.begin(), items_.end(), [](const diagnostic& a, const diagnostic& b) {
    if (a.file != b.file) return a.file < b.file;
    if (a.line != b.line) return a.line < b.line;
    return a.column < b.column;
  });
}

std::string format(const diagnostic& d) {
  std::string out = d.file;
  if (d.line > 0) {
    out += ':' + std::to_string(d.line);
    if (d.column > 0) out += ':' + std::to_string(d.column);
  }
  out += d.level == severity::error ? ": error: " : ": warning: ";
  if (!d.path.empty()) out += d.path + ": ";
  out += d.message;
  return out;
}

void diagnostics::print(std::ostream& out) const {
  for (const auto& d : items_) out << format(d) << '\n';
}

}  // namespace egress::common
