#include "egress/gen/yaml_writer.hpp"

#include <algorithm>
#include <array>

namespace egress::gen {

node node::str(std::string s) {
  node n;
  n.kind_ = kind::string;
  n.scalar_ = std::move(s);
  return n;
}

node node::integer(std::int64_t v) {
  node n;
  n.kind_ = kind::integer;
  n.scalar_ = std::to_string(v);
  return n;
}

node node::boolean(bool v) {
  node n;
  n.kind_ = kind::boolean;
  n.scalar_ = v ? "true" : "false";
  return n;
}

node node::map() { return node(); }

node node::seq() {
  node n;
  n.kind_ = kind::seq;
  return n;
}

node node::str_seq(const std::vector<std::string>& items) {
  node n = seq();
  for (const auto& s : items) n.push(str(s));
  return n;
}

node& node::set(std::string key, node value) {
  entries_.emplace_back(std::move(key), std::move(value));
  return *this;
}

node& node::push(node value) {
  items_.push_back(std::move(value));
  return *this;
}

std::string quote_if_needed(std::string_view s) {
  static constexpr std::array<std::string_view, 22> special = {
      "y", "Y", "n", "N", "yes", "Yes", "YES", "no", "No", "NO", "on", "On",
      "ON", "off", "Off", "OFF", "true", "True", "TRUE", "false", "null", "~"};
  bool quote = s.empty() || std::find(special.begin(), special.end(), s) != special.end();
  if (!quote) {
    char f = s.front();
    // Indicators that cannot start a plain scalar, and anything numeric-looking.
    if (std::string_view("-?:,[]{}#&*!|>'\"%@`. ").find(f) != std::string_view::npos) quote = true;
    if ((f >= '0' && f <= '9') || f == '+') quote = true;
    if (s.back() == ' ') quote = true;
    for (char c : s) {
      bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_' || c == '.' || c == '/';
      if (!safe) quote = true;
    }
    if (s == "false" || s == "False" || s == "FALSE" || s == "Null" || s == "NULL") quote = true;
  }
  if (!quote) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static constexpr char hex[] = "0123456789abcdef";
          out += "\\x";
          out += hex[(static_cast<unsigned char>(c) >> 4) & 0xf];
          out += hex[static_cast<unsigned char>(c) & 0xf];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

class emitter {
public:
  std::string out;

  static bool inline_value(const node& n) {
    return n.kind_ == node::kind::string || n.kind_ == node::kind::integer || n.kind_ == node::kind::boolean ||
           n.empty();
  }

  static std::string scalar(const node& n) {
    switch (n.kind_) {
      case node::kind::string: return quote_if_needed(n.scalar_);
      case node::kind::integer:
      case node::kind::boolean: return n.scalar_;
      case node::kind::map: return "{}";
      case node::kind::seq: return "[]";
    }
    return "";
  }

  // Emits the entries of a map; the first line continues after `first_prefix` (used for
  // "- " of a sequence item), later lines start with `indent` spaces.
  void map_body(const node& n, std::size_t indent, bool continue_line) {
    bool first = true;
    for (const auto& [k, v] : n.entries_) {
      if (!(first && continue_line)) out.append(indent, ' ');
      first = false;
      out += quote_if_needed(k);
      out += ':';
      value(v, indent);
    }
  }

  void seq_body(const node& n, std::size_t indent) {
    for (const auto& item : n.items_) {
      out.append(indent, ' ');
      out += "- ";
      if (item.kind_ == node::kind::map && !item.empty()) {
        map_body(item, indent + 2, true);
      } else if (item.kind_ == node::kind::seq && !item.empty()) {
        out += '\n';
        seq_body(item, indent + 2);
      } else {
        out += scalar(item);
        out += '\n';
      }
    }
  }

  // After "key:" at `indent`.
  void value(const node& v, std::size_t indent) {
    if (inline_value(v)) {
      out += ' ';
      out += scalar(v);
      out += '\n';
    } else if (v.kind_ == node::kind::map) {
      out += '\n';
      map_body(v, indent + 2, false);
    } else {
      // Sequences under a key are indented by two, the style kubectl and helm emit.
      out += '\n';
      seq_body(v, indent + 2);
    }
  }
};

std::string node::emit() const {
  emitter e;
  if (kind_ == kind::map && !empty()) e.map_body(*this, 0, false);
  else if (kind_ == kind::seq && !empty()) e.seq_body(*this, 0);
  else e.out = emitter::scalar(*this) + "\n";
  return e.out;
}

}  // namespace egress::gen
