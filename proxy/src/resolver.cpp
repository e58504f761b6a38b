// c-ares 1.18 has no event thread of its own: it tells us, through the socket-state
// callback, which sockets to watch for which readiness, and through ares_timeout() when
// it next needs to retransmit or give up. We watch each socket with an Asio
// posix::stream_descriptor (released, never closed: c-ares owns the fd), call
// ares_process_fd() on readiness, and drive its clock with a steady_timer.
//
// Completion reaches the awaiting coroutine through a per-caller "signal" timer that
// expires at the lookup's deadline: the c-ares callback stores the outcome and cancels the
// timer, so the coroutine is always resumed through the io_context, never from inside
// c-ares. c-ares callbacks only ever see a heap query_context that owns a share of the
// lookup record, never coroutine state, so ares_destroy() (which calls every pending
// callback with ARES_EDESTRUCTION) is safe at any time.

#include "egress/proxy/resolver.hpp"

#include <ares.h>
#include <arpa/nameser.h>
#include <netinet/in.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/address_v6.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/errc.hpp>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <utility>

namespace egress::proxy {

namespace {

namespace asio = boost::asio;
using boost::asio::ip::address;
using boost::system::error_code;
using clock_type = std::chrono::steady_clock;
using hosts_map = std::map<std::string, std::vector<address>>;

// ---------------------------------------------------------------------------------------
// Error category

class dns_category_impl final : public boost::system::error_category {
public:
  // A fixed id makes categories compare equal across shared objects (Boost.System >= 1.70).
  constexpr dns_category_impl() noexcept : error_category(0x6567726573732e64ULL) {}

  const char* name() const noexcept override { return "egress.dns"; }

  std::string message(int ev) const override {
    switch (static_cast<dns_error>(ev)) {
      case dns_error::not_found: return "host name not found (NXDOMAIN or no A/AAAA records)";
      case dns_error::timeout: return "DNS lookup timed out";
      case dns_error::server_failure: return "DNS server failure";
      case dns_error::refused: return "DNS server refused the query";
      case dns_error::bad_name: return "not a valid normalised host name";
      case dns_error::cancelled: return "DNS lookup cancelled";
      case dns_error::internal: return "internal resolver error";
    }
    return "unknown DNS error";
  }

  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<dns_error>(ev)) {
      case dns_error::timeout: return boost::system::errc::make_error_condition(boost::system::errc::timed_out);
      case dns_error::cancelled:
        return boost::system::errc::make_error_condition(boost::system::errc::operation_canceled);
      default: return {ev, *this};
    }
  }
};

error_code make_error(dns_error e) noexcept { return make_error_code(e); }

// ---------------------------------------------------------------------------------------
// Option checks

// One `servers` entry in the form ares_set_servers_ports_csv(3) wants ("a.b.c.d:port" or
// "[v6]:port"). We parse it ourselves because c-ares 1.18 reads the port with strtol and
// silently accepts "1.2.3.4:junk" as port 0.
std::string canonical_server(const std::string& entry) {
  auto fail = [&](const char* why) -> std::runtime_error {
    return std::runtime_error("resolver: bad server \"" + entry + "\": " + why);
  };
  std::string host;
  std::string_view port_text;
  bool bracketed = false;
  if (!entry.empty() && entry.front() == '[') {
    auto close = entry.find(']');
    if (close == std::string::npos) throw fail("missing ']'");
    host = entry.substr(1, close - 1);
    std::string_view rest = std::string_view(entry).substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw fail("expected ':port' after ']'");
      port_text = rest.substr(1);
      if (port_text.empty()) throw fail("empty port");
    }
    bracketed = true;
  } else {
    auto colons = std::count(entry.begin(), entry.end(), ':');
    if (colons == 1) {
      auto colon = entry.find(':');
      host = entry.substr(0, colon);
      port_text = std::string_view(entry).substr(colon + 1);
      if (port_text.empty()) throw fail("empty port");
    } else {
      host = entry;  // IPv4 without port, or a bare IPv6 address (no port possible)
    }
  }
  if (host.find('%') != std::string::npos) throw fail("zone ids are not supported");
  error_code ec;
  address addr = asio::ip::make_address(host, ec);
  if (ec) throw fail("not an IP address");
  if (bracketed && !addr.is_v6()) throw fail("brackets are for IPv6 addresses");
  unsigned long port = 53;
  if (!port_text.empty()) {
    if (port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
      throw fail("port is not a number");
    port = std::stoul(std::string(port_text));
    if (port == 0 || port > 65535) throw fail("port out of range 1-65535");
  }
  std::string out = addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string();
  return out + ":" + std::to_string(port);
}

// RFC 1035 §2.3.4 limits on the normalised form: 1..253 octets, labels 1..63, no trailing
// dot. Only lower-case LDH and '_' (the normaliser upstream emits LDH; '_' is harmless).
// Anything else could be misread by ares_create_query (it interprets '\' escapes).
bool valid_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label != 0;
}

// Appends `a` unless already present: answers keep their order, without duplicates.
void append_unique(std::vector<address>& out, const address& a) {
  if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
}

hosts_map normalise_hosts(hosts_map in) {
  hosts_map out;
  for (auto& [raw, addresses] : in) {
    std::string key = raw;
    std::transform(key.begin(), key.end(), key.begin(), [](char c) {
      return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    });
    if (!key.empty() && key.back() == '.') key.pop_back();
    auto& dst = out[key];
    for (const auto& a : addresses)
      if (a.is_v4()) append_unique(dst, a);
    for (const auto& a : addresses)
      if (a.is_v6()) append_unique(dst, a);
  }
  return out;
}

void validate(const resolver_options& o) {
  if (o.timeout.count() <= 0) throw std::runtime_error("resolver: timeout must be > 0");
  if (o.min_ttl.count() < 0 || o.max_ttl.count() < 0)
    throw std::runtime_error("resolver: min_ttl and max_ttl must be >= 0");
  if (o.min_ttl > o.max_ttl) throw std::runtime_error("resolver: min_ttl must be <= max_ttl");
  if (o.max_cache_entries == 0) throw std::runtime_error("resolver: max_cache_entries must be > 0");
}

void init_ares_library() {
  // ares_library_init is not thread-safe; a function-local static runs it exactly once.
  static const int status = ares_library_init(ARES_LIB_INIT_ALL);
  if (status != ARES_SUCCESS)
    throw std::runtime_error(std::string("resolver: ares_library_init: ") + ares_strerror(status));
}

// Number of name servers the system resolv.conf gives c-ares (it falls back to 127.0.0.1).
int count_system_servers() {
  ares_channel probe = nullptr;
  if (int st = ares_init(&probe); st != ARES_SUCCESS)
    throw std::runtime_error(std::string("resolver: ares_init: ") + ares_strerror(st));
  ares_addr_port_node* servers = nullptr;
  int n = 0;
  if (ares_get_servers_ports(probe, &servers) == ARES_SUCCESS)
    for (auto* s = servers; s != nullptr; s = s->next) ++n;
  ares_free_data(servers);
  ares_destroy(probe);
  return std::max(n, 1);
}

// What a c-ares status means for the caller.
dns_error map_status(int status) noexcept {
  switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA: return dns_error::not_found;
    case ARES_ETIMEOUT: return dns_error::timeout;
    case ARES_ESERVFAIL:
    case ARES_EFORMERR:
    case ARES_ENOTIMP:
    case ARES_EBADRESP:
    case ARES_ECONNREFUSED:  // every try failed without a usable answer (c-ares 1.18 default)
    case ARES_EOF: return dns_error::server_failure;
    case ARES_EREFUSED: return dns_error::refused;
    case ARES_EBADNAME: return dns_error::bad_name;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION: return dns_error::cancelled;
    default: return dns_error::internal;
  }
}

// Upper bound on records taken from one answer (a 64 KiB TCP answer could hold more;
// a proxy never needs them).
constexpr int max_records = 64;

}  // namespace

// ---------------------------------------------------------------------------------------
// Public free functions

const boost::system::error_category& dns_error_category() noexcept {
  static const dns_category_impl category;
  return category;
}

boost::system::error_code make_error_code(dns_error e) noexcept {
  return {static_cast<int>(e), dns_error_category()};
}

std::string_view dns_error_reason(dns_error e) noexcept {
  switch (e) {
    case dns_error::not_found: return "dns_not_found";
    case dns_error::timeout: return "dns_timeout";
    case dns_error::server_failure: return "dns_failure";
    case dns_error::refused: return "dns_refused";
    case dns_error::bad_name: return "dns_bad_name";
    case dns_error::cancelled: return "dns_cancelled";
    case dns_error::internal: return "dns_internal";
  }
  return "dns_internal";
}

namespace detail {
// Everything but resolver_core (declared in the header) has internal linkage, so these
// short names cannot collide with other translation units' detail namespaces.
namespace {

using answer_result = boost::system::result<resolve_answer>;

// How a lookup ended, before it becomes a result<> at the coroutine's co_return. (Kept
// out of std::optional<result<>>: GCC 12 reports false -Wmaybe-uninitialized there.)
struct outcome {
  error_code error;        // a dns_error, or success
  resolve_answer answer;   // meaningful only on success
};

outcome failure(dns_error e) { return {make_error(e), {}}; }

answer_result to_result(outcome&& o) {
  if (o.error) return answer_result(o.error);
  return answer_result(std::move(o.answer));
}

// A timer whose async_wait defaults to as_tuple(use_awaitable): `auto [ec] = co_await t.async_wait();`
using signal_timer = asio::as_tuple_t<asio::use_awaitable_t<>>::as_default_on_t<asio::steady_timer>;

// One awaiting resolve() call. The outcome is stored before the timer is cancelled, so
// "timer done, no outcome" means the deadline passed (success) or the caller was
// cancelled through its slot (operation_aborted).
struct waiter {
  explicit waiter(const asio::any_io_executor& ex) : signal(ex) {}
  signal_timer signal;
  std::optional<outcome> result;
};

// What one query (A or AAAA) produced.
struct family_result {
  bool done = false;
  int status = ARES_ETIMEOUT;    // ARES_SUCCESS only with addresses
  std::vector<address> addresses;  // answer order, de-duplicated
  long min_ttl = LONG_MAX;         // seconds, over the records taken
};

// One name's DNS lookup in flight (shared by coalesced callers).
struct lookup {
  std::string name;
  clock_type::time_point deadline;
  family_result v4, v6;
  std::vector<std::shared_ptr<waiter>> waiters;
  bool finished = false;
};

// The `arg` of one ares_query. c-ares calls the callback exactly once per query (answer,
// failure, ares_cancel or ares_destroy), which deletes this; it never points at coroutine
// state.
struct query_context {
  resolver_core* core;
  std::shared_ptr<lookup> record;
  bool ipv6;
};

// A socket c-ares asked us to watch. Released, never closed: c-ares owns the fd and
// closes it right after its socket-state callback reports (0, 0).
struct watched_socket {
  watched_socket(const asio::any_io_executor& ex, ares_socket_t s) : fd(s), descriptor(ex) {}
  ~watched_socket() { release(); }
  watched_socket(const watched_socket&) = delete;
  watched_socket& operator=(const watched_socket&) = delete;

  // Deregisters from the reactor and cancels pending waits (their handlers then see
  // `closed`), leaving the fd open for c-ares.
  void release() noexcept {
    closed = true;
    if (descriptor.is_open()) (void)descriptor.release();
  }

  ares_socket_t fd;
  asio::posix::stream_descriptor descriptor;
  bool want_read = false, want_write = false;
  bool read_armed = false, write_armed = false;
  bool closed = false;
};

struct cache_entry {
  clock_type::time_point expires;
  std::vector<address> addresses;  // empty: negative entry (not_found)
};

}  // namespace

struct resolver_core : std::enable_shared_from_this<resolver_core> {
  resolver_core(asio::any_io_executor ex, resolver_options opts);
  ~resolver_core();
  resolver_core(const resolver_core&) = delete;
  resolver_core& operator=(const resolver_core&) = delete;

  void shutdown() noexcept;

  // Static hosts, then cache; nullopt means "ask DNS". Also rejects bad names.
  std::optional<outcome> answer_locally(const std::string& name);
  // Joins the lookup in flight for `name` or starts one; the waiter may already hold
  // its outcome when this returns (c-ares can fail a query synchronously).
  std::pair<std::shared_ptr<lookup>, std::shared_ptr<waiter>> join_or_start(const std::string& name);
  void on_deadline(const std::shared_ptr<lookup>& record);
  void abandon(lookup& record, const std::shared_ptr<waiter>& w);

  void start_query(const std::shared_ptr<lookup>& record, bool ipv6);
  void on_answer(const std::shared_ptr<lookup>& record, bool ipv6, int status, const unsigned char* abuf, int alen);
  void finish(std::shared_ptr<lookup> record);
  void complete(lookup& record, const outcome& o);
  outcome combine(lookup& record) const;
  void cache_put(const std::string& name, cache_entry entry);

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
  static void on_query(void* arg, int status, int timeouts, unsigned char* abuf, int alen);
  void sock_state(ares_socket_t fd, bool readable, bool writable);
  void arm(const std::shared_ptr<watched_socket>& s);
  void process(const std::shared_ptr<watched_socket>& s, bool readable, bool writable);
  void schedule_timeout();

  asio::any_io_executor ex_;
  resolver_options opts_;
  ares_channel channel_ = nullptr;
  asio::steady_timer ares_timer_;
  std::map<ares_socket_t, std::shared_ptr<watched_socket>> sockets_;
  std::map<std::string, std::shared_ptr<lookup>, std::less<>> inflight_;
  std::map<std::string, cache_entry, std::less<>> cache_;
  bool closed_ = false;
};

resolver_core::resolver_core(asio::any_io_executor ex, resolver_options opts)
    : ex_(std::move(ex)), opts_(std::move(opts)), ares_timer_(ex_) {
  validate(opts_);
  opts_.hosts = normalise_hosts(std::move(opts_.hosts));
  std::string csv;
  for (const auto& s : opts_.servers) csv += (csv.empty() ? "" : ",") + canonical_server(s);

  init_ares_library();
  const int nservers = opts_.servers.empty() ? count_system_servers() : static_cast<int>(opts_.servers.size());

  // c-ares 1.18 tries each server `tries` times, round robin, doubling the per-try timeout
  // after each full round: total = per_try * nservers * (2^tries - 1). With two tries that
  // is 3 * nservers * per_try, which we fit into the budget. The Asio deadline is the hard
  // bound either way.
  constexpr int tries = 2;
  const long long per_try = std::clamp<long long>(opts_.timeout.count() / (3LL * nservers), 1, INT_MAX);

  ares_options o{};
  o.sock_state_cb = &resolver_core::on_sock_state;
  o.sock_state_cb_data = this;
  o.timeout = static_cast<int>(per_try);
  o.tries = tries;
  // No search list, no HOSTALIASES (ares_query uses neither, but keep it that way even if
  // someone switches to ares_search). With a single server, report the real rcode
  // (SERVFAIL, REFUSED) instead of retrying it and ending with ECONNREFUSED; with several,
  // keep c-ares's default of moving on to the next server.
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | (nservers == 1 ? ARES_FLAG_NOCHECKRESP : 0);
  o.ndots = 1;
  o.domains = nullptr;
  o.ndomains = 0;
  char lookups[] = "b";  // DNS only, never /etc/hosts (only gethostbyname/getaddrinfo read it)
  o.lookups = lookups;
  const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS |
                   ARES_OPT_NDOTS | ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS;
  if (int st = ares_init_options(&channel_, &o, mask); st != ARES_SUCCESS) {
    channel_ = nullptr;
    throw std::runtime_error(std::string("resolver: ares_init_options: ") + ares_strerror(st));
  }
  if (!csv.empty()) {
    if (int st = ares_set_servers_ports_csv(channel_, csv.c_str()); st != ARES_SUCCESS) {
      ares_destroy(channel_);
      channel_ = nullptr;
      throw std::runtime_error("resolver: ares_set_servers_ports_csv(\"" + csv + "\"): " + ares_strerror(st));
    }
  }
}

resolver_core::~resolver_core() { shutdown(); }

void resolver_core::shutdown() noexcept {
  if (closed_) return;
  closed_ = true;
  // Callers first, so the EDESTRUCTION callbacks below find their lookups finished.
  auto inflight = std::move(inflight_);
  inflight_.clear();
  for (auto& [name, record] : inflight) {
    record->finished = true;
    complete(*record, failure(dns_error::cancelled));
  }
  if (channel_ != nullptr) {
    ares_destroy(channel_);  // calls pending query callbacks and reports each socket (0, 0)
    channel_ = nullptr;
  }
  for (auto& [fd, s] : sockets_) s->release();
  sockets_.clear();
  ares_timer_.cancel();
}

std::optional<outcome> resolver_core::answer_locally(const std::string& name) {
  if (!valid_name(name)) return failure(dns_error::bad_name);
  if (auto h = opts_.hosts.find(name); h != opts_.hosts.end()) {
    if (h->second.empty()) return failure(dns_error::not_found);
    resolve_answer a;
    a.addresses = h->second;
    a.ttl = opts_.max_ttl;
    a.from_hosts = true;
    return outcome{{}, std::move(a)};
  }
  if (auto c = cache_.find(name); c != cache_.end()) {
    const auto now = clock_type::now();
    if (c->second.expires <= now) {
      cache_.erase(c);
      return std::nullopt;
    }
    if (c->second.addresses.empty()) return failure(dns_error::not_found);
    resolve_answer a;
    a.addresses = c->second.addresses;
    a.ttl = std::chrono::ceil<std::chrono::seconds>(c->second.expires - now);
    a.from_cache = true;
    return outcome{{}, std::move(a)};
  }
  return std::nullopt;
}

std::pair<std::shared_ptr<lookup>, std::shared_ptr<waiter>> resolver_core::join_or_start(const std::string& name) {
  const auto now = clock_type::now();
  auto it = inflight_.find(name);
  if (it != inflight_.end() && it->second->deadline <= now) {
    // Past its budget with nobody waiting (every caller was cancelled): close it out and
    // start afresh rather than hand a new caller an exhausted budget.
    finish(it->second);
    it = inflight_.end();
  }
  std::shared_ptr<lookup> record;
  const bool fresh = it == inflight_.end();
  if (fresh) {
    record = std::make_shared<lookup>();
    record->name = name;
    record->deadline = now + opts_.timeout;
    inflight_.emplace(name, record);
  } else {
    record = it->second;
  }
  auto w = std::make_shared<waiter>(ex_);
  w->signal.expires_at(record->deadline);
  record->waiters.push_back(w);
  if (fresh) {
    start_query(record, false);
    start_query(record, true);
    schedule_timeout();
  }
  return {std::move(record), std::move(w)};
}

void resolver_core::start_query(const std::shared_ptr<lookup>& record, bool ipv6) {
  // "name." is absolute: never subject to a search list (RFC 1034 §3.1).
  const std::string qname = record->name + ".";
  auto* ctx = new query_context{this, record, ipv6};
  // The callback owns ctx from here, also when c-ares fails the query synchronously.
  ares_query(channel_, qname.c_str(), ns_c_in, ipv6 ? ns_t_aaaa : ns_t_a, &resolver_core::on_query, ctx);
}

void resolver_core::on_query(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
  std::unique_ptr<query_context> ctx(static_cast<query_context*>(arg));
  ctx->core->on_answer(ctx->record, ctx->ipv6, status, abuf, alen);
}

void resolver_core::on_answer(const std::shared_ptr<lookup>& record, bool ipv6, int status,
                              const unsigned char* abuf, int alen) {
  if (record->finished) return;  // deadline passed, caller cancelled everything, or shutdown
  family_result& f = ipv6 ? record->v6 : record->v4;
  f.done = true;
  if (status == ARES_SUCCESS) {
    // ares_parse_*_reply follow the CNAME chain and report each address's TTL, already
    // lowered to the chain's smallest CNAME TTL (c-ares ares__addrinfo2addrttl).
    int n = max_records;
    if (ipv6) {
      std::array<ares_addr6ttl, max_records> ttls{};
      status = ares_parse_aaaa_reply(abuf, alen, nullptr, ttls.data(), &n);
      for (int i = 0; status == ARES_SUCCESS && i < n; ++i) {
        asio::ip::address_v6::bytes_type bytes{};
        std::memcpy(bytes.data(), &ttls[static_cast<std::size_t>(i)].ip6addr, bytes.size());
        append_unique(f.addresses, asio::ip::address_v6(bytes));
        f.min_ttl = std::min<long>(f.min_ttl, std::max(0, ttls[static_cast<std::size_t>(i)].ttl));
      }
    } else {
      std::array<ares_addrttl, max_records> ttls{};
      status = ares_parse_a_reply(abuf, alen, nullptr, ttls.data(), &n);
      for (int i = 0; status == ARES_SUCCESS && i < n; ++i) {
        const auto& r = ttls[static_cast<std::size_t>(i)];
        append_unique(f.addresses, asio::ip::address_v4(ntohl(r.ipaddr.s_addr)));
        f.min_ttl = std::min<long>(f.min_ttl, std::max(0, r.ttl));
      }
    }
    if (status == ARES_SUCCESS && f.addresses.empty()) status = ARES_ENODATA;
  }
  f.status = status;
  if (record->v4.done && record->v6.done) finish(record);
}

outcome resolver_core::combine(lookup& record) const {
  for (family_result* f : {&record.v4, &record.v6})
    if (!f->done) f->status = ARES_ETIMEOUT;
  resolve_answer a;
  long ttl = LONG_MAX;
  for (const family_result* f : {&record.v4, &record.v6}) {
    if (f->addresses.empty()) continue;
    for (const auto& addr : f->addresses) append_unique(a.addresses, addr);
    ttl = std::min(ttl, f->min_ttl);
  }
  if (!a.addresses.empty()) {
    a.ttl = std::clamp(std::chrono::seconds(ttl), opts_.min_ttl, opts_.max_ttl);
    return outcome{{}, std::move(a)};
  }
  const int s4 = record.v4.status, s6 = record.v6.status;
  // NXDOMAIN speaks for the name, whatever the other family did (RFC 1034 §4.3.2).
  if (s4 == ARES_ENOTFOUND || s6 == ARES_ENOTFOUND) return failure(dns_error::not_found);
  if (s4 == ARES_ENODATA && s6 == ARES_ENODATA) return failure(dns_error::not_found);
  return failure(map_status(s4 == ARES_ENODATA ? s6 : s4));
}

void resolver_core::finish(std::shared_ptr<lookup> record) {
  if (record->finished) return;
  record->finished = true;
  if (auto it = inflight_.find(record->name); it != inflight_.end() && it->second == record) inflight_.erase(it);
  const outcome o = combine(*record);
  const auto now = clock_type::now();
  if (!o.error) {
    if (o.answer.ttl.count() > 0) cache_put(record->name, cache_entry{now + o.answer.ttl, o.answer.addresses});
  } else if (o.error == make_error(dns_error::not_found) && opts_.min_ttl.count() > 0) {
    cache_put(record->name, cache_entry{now + opts_.min_ttl, {}});  // negative cache
  }
  complete(*record, o);
}

void resolver_core::complete(lookup& record, const outcome& o) {
  for (auto& w : record.waiters) {
    w->result = o;
    w->signal.cancel();  // resumes the caller through the io_context, never inline
  }
  record.waiters.clear();
}

void resolver_core::on_deadline(const std::shared_ptr<lookup>& record) {
  if (!closed_) finish(record);
}

void resolver_core::abandon(lookup& record, const std::shared_ptr<waiter>& w) {
  std::erase(record.waiters, w);
  w->result = failure(dns_error::cancelled);
  // The lookup itself goes on: other callers may join it and its answer fills the cache.
}

void resolver_core::cache_put(const std::string& name, cache_entry entry) {
  if (cache_.size() >= opts_.max_cache_entries && !cache_.contains(name)) {
    const auto now = clock_type::now();
    std::erase_if(cache_, [&](const auto& kv) { return kv.second.expires <= now; });
    if (cache_.size() >= opts_.max_cache_entries) {
      auto soonest = std::min_element(cache_.begin(), cache_.end(), [](const auto& a, const auto& b) {
        return a.second.expires < b.second.expires;
      });
      cache_.erase(soonest);
    }
  }
  cache_.insert_or_assign(name, std::move(entry));
}

// ---------------------------------------------------------------------------------------
// c-ares <-> Asio

void resolver_core::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<resolver_core*>(data)->sock_state(fd, readable != 0, writable != 0);
}

void resolver_core::sock_state(ares_socket_t fd, bool readable, bool writable) {
  auto it = sockets_.find(fd);
  if (!readable && !writable) {
    // c-ares is about to close fd: take it out of epoll first, keep it open.
    if (it != sockets_.end()) {
      it->second->release();
      sockets_.erase(it);
    }
    return;
  }
  if (closed_) return;
  std::shared_ptr<watched_socket> s;
  if (it == sockets_.end()) {
    s = std::make_shared<watched_socket>(ex_, fd);
    error_code ec;
    s->descriptor.assign(fd, ec);
    // Cannot watch it (epoll refused): its queries end through ares_timeout instead.
    if (ec) return;
    sockets_.emplace(fd, s);
  } else {
    s = it->second;
  }
  s->want_read = readable;
  s->want_write = writable;
  arm(s);
}

void resolver_core::arm(const std::shared_ptr<watched_socket>& s) {
  if (s->closed) return;
  // Handlers hold a weak reference to the core (it may be gone when they run) and a
  // strong one to the socket record (to tell a released socket from a reused fd number).
  if (s->want_read && !s->read_armed) {
    s->read_armed = true;
    s->descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                             [weak = weak_from_this(), s](const error_code&) {
                               s->read_armed = false;
                               auto self = weak.lock();
                               if (!self || self->closed_ || s->closed) return;
                               if (!s->want_read) {
                                 self->arm(s);
                                 return;
                               }
                               // Errors (other than release's operation_aborted, excluded
                               // by `closed`) are c-ares's to discover when it reads.
                               self->process(s, true, false);
                             });
  }
  if (s->want_write && !s->write_armed) {
    s->write_armed = true;
    s->descriptor.async_wait(asio::posix::descriptor_base::wait_write,
                             [weak = weak_from_this(), s](const error_code&) {
                               s->write_armed = false;
                               auto self = weak.lock();
                               if (!self || self->closed_ || s->closed) return;
                               if (!s->want_write) {
                                 self->arm(s);
                                 return;
                               }
                               self->process(s, false, true);
                             });
  }
}

void resolver_core::process(const std::shared_ptr<watched_socket>& s, bool readable, bool writable) {
  // c-ares 1.18 reads a TCP socket one chunk per call (length prefix, then body), so the
  // socket may still be readable afterwards. That is fine: each async_wait re-arms the
  // descriptor with EPOLL_CTL_MOD, which reports a socket that is already ready, so the
  // wait below completes at once (level-triggered in effect). Covered by the
  // "truncated UDP answer is retried over TCP" test.
  ares_process_fd(channel_, readable ? s->fd : ARES_SOCKET_BAD, writable ? s->fd : ARES_SOCKET_BAD);
  if (!closed_ && !s->closed) arm(s);
  schedule_timeout();
}

void resolver_core::schedule_timeout() {
  if (closed_ || channel_ == nullptr) return;
  timeval tv{};
  const timeval* next = ares_timeout(channel_, nullptr, &tv);
  if (next == nullptr) {  // no queries pending
    ares_timer_.cancel();
    return;
  }
  ares_timer_.expires_after(std::chrono::seconds(next->tv_sec) + std::chrono::microseconds(next->tv_usec));
  ares_timer_.async_wait([weak = weak_from_this()](const error_code& ec) {
    if (ec) return;  // re-armed or shut down
    auto self = weak.lock();
    if (!self || self->closed_) return;
    ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // retransmit / give up
    self->schedule_timeout();
  });
}

namespace {

// The body of resolver::resolve: a free coroutine holding a share of the core, so the
// resolver object may be destroyed while it is suspended.
asio::awaitable<answer_result> resolve_with(std::shared_ptr<resolver_core> core, std::string name) {
  if (core->closed_) co_return make_error(dns_error::cancelled);
  if (auto local = core->answer_locally(name)) co_return to_result(std::move(*local));
  auto [record, w] = core->join_or_start(name);
  if (!w->result) {
    auto [ec] = co_await w->signal.async_wait();
    if (!w->result) {
      if (!ec)
        core->on_deadline(record);  // completes every caller of this lookup, us included
      else
        core->abandon(*record, w);  // our cancellation slot fired
    }
  }
  if (!w->result) co_return make_error(dns_error::internal);  // unreachable: see above
  co_return to_result(std::move(*w->result));
}

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------------------------------
// resolver

resolver::resolver(boost::asio::any_io_executor ex, resolver_options opts)
    : core_(std::make_shared<detail::resolver_core>(std::move(ex), std::move(opts))) {}

resolver::~resolver() { core_->shutdown(); }

boost::asio::awaitable<boost::system::result<resolve_answer>> resolver::resolve(std::string name) {
  return detail::resolve_with(core_, std::move(name));
}

void resolver::set_hosts(std::map<std::string, std::vector<boost::asio::ip::address>> hosts) {
  core_->opts_.hosts = normalise_hosts(std::move(hosts));
}

std::size_t resolver::cache_size() const noexcept { return core_->cache_.size(); }

std::size_t resolver::in_flight() const noexcept { return core_->inflight_.size(); }

}  // namespace egress::proxy
