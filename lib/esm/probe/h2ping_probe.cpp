#include "esm/probe/probes.hpp"
namespace esm::probe::detail {
boost::asio::awaitable<probe_result> run_h2ping(const h2ping_spec&, probe_context&) { co_return probe_result{check_status::critical, "todo"}; }
}
