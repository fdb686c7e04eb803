// Vivaldi network coordinates: a port of hashicorp/serf's `coordinate` package (config.go,
// coordinate.go, client.go; phantom.go is left out), the algorithm Consul uses for its
// coordinates. consul-esm moves an external node's coordinate after every successful ping:
// a fresh serf Client set to the node's coordinate, one Update with the local agent's
// coordinate and the ping RTT (reference §7.5). Consul estimates RTTs (?near= sorting,
// `consul rtt`) from these next to the coordinates its agents compute with serf, so esmd must
// compute what consul-esm computes: the defaults are serf's DefaultConfig() and every function
// mirrors serf's of the same name (ApplyForce is apply_force, updateVivaldi is update_vivaldi,
// ...), so the port can be checked line by line.
//
// Deliberate differences from serf, none in the arithmetic:
// - the random unit vector for coincident coordinates comes from an injected source
//   (serf uses math/rand's global one), so tests are deterministic, and can even replay
//   math/rand's stream to reproduce serf's simulations;
// - vivaldi_client has no mutex: consul-esm's use is one short-lived client per update;
// - serf's panics on mismatched dimensions (ApplyForce, DistanceTo) are exceptions
//   (dimensionality_conflict_error), a broken invariant; Client::Update and SetCoordinate
//   check first and return error values, as serf returns errors;
// - a latency filter of size 0, which makes serf panic on the first Update, is refused by the
//   constructor together with serf's own dimensionality check.
//
// All values are seconds. Where serf goes through time.Duration (DistanceTo returns one, and
// Update takes the RTT as one) the nanosecond truncation is reproduced, because it changes the
// last digits of the results.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace esm::ping {

// serf Config, with DefaultConfig()'s values.
struct vivaldi_config {
  std::size_t dimensionality = 8;
  double vivaldi_error_max = 1.5;  // a new coordinate's error, and the cap on it
  double vivaldi_ce = 0.25;        // how much one sample moves the error
  double vivaldi_cc = 0.25;        // how much one sample moves the coordinate
  std::size_t adjustment_window_size = 20;  // 0 disables the adjustment term
  double height_min = 10.0e-6;     // seconds
  std::size_t latency_filter_size = 3;  // samples per node for the moving median
  double gravity_rho = 150.0;      // pull towards the origin, against drift
};

// serf Coordinate; JSON field names in Consul are Vec, Error, Adjustment, Height.
struct coordinate {
  std::vector<double> vec;
  double error = 0;
  double adjustment = 0;
  double height = 0;
  bool operator==(const coordinate&) const = default;
};

// serf's errors from Client.Update and Client.SetCoordinate.
enum class vivaldi_errc {
  dimensionality_conflict = 1,  // "dimensions aren't compatible"
  invalid_coordinate,           // "coordinate is invalid" (NaN or Inf somewhere)
  rtt_out_of_range,             // "round trip time not in valid range" (outside [0, 10 s])
};
const boost::system::error_category& vivaldi_category() noexcept;
inline boost::system::error_code make_error_code(vivaldi_errc e) noexcept {
  return {static_cast<int>(e), vivaldi_category()};
}

// serf DimensionalityConflictError, which serf panics with.
class dimensionality_conflict_error : public std::logic_error {
 public:
  dimensionality_conflict_error() : std::logic_error("coordinate dimensionality does not match") {}
};

inline constexpr double seconds_to_nanoseconds = 1.0e9;
// Below this two positions count as the same point (and an RTT or total error as zero).
inline constexpr double zero_threshold = 1.0e-6;
// serf Client.Update's maxRTT.
inline constexpr std::chrono::nanoseconds max_rtt = std::chrono::seconds(10);

// Where serf calls math/rand's Float64: each call returns a value uniform in [0, 1).
using vivaldi_random = std::function<double()>;
// Float64s from rng (vivaldi_detail::random_float64); keeps a reference to rng.
vivaldi_random float64_source(std::mt19937_64& rng);

coordinate new_coordinate(const vivaldi_config&);  // at the origin, error max, height min
bool is_valid(const coordinate&);                  // every component finite
bool is_compatible_with(const coordinate&, const coordinate&);  // same dimensionality

// serf ApplyForce: c pushed by force (seconds) away from other; random only when they
// coincide. Throws dimensionality_conflict_error.
coordinate apply_force(const vivaldi_config&, const coordinate& c, double force,
                       const coordinate& other, const vivaldi_random& random);

// serf DistanceTo, a time.Duration: raw distance plus both adjustments unless that would not
// be positive, truncated to nanoseconds. Throws dimensionality_conflict_error.
std::chrono::nanoseconds distance_to_duration(const coordinate& a, const coordinate& b);
// The same in seconds, i.e. serf's DistanceTo(...).Seconds().
double distance_to(const coordinate& a, const coordinate& b);
// serf rawDistanceTo: |a.vec - b.vec| + both heights, without adjustments; assumes compatible.
double raw_distance_to(const coordinate& a, const coordinate& b);

// serf's vector helpers and Go's time.Duration conversions, public so that serf's tests of
// them can be ported.
namespace vivaldi_detail {
std::vector<double> add(const std::vector<double>& vec1, const std::vector<double>& vec2);
std::vector<double> diff(const std::vector<double>& vec1, const std::vector<double>& vec2);
std::vector<double> mul(const std::vector<double>& vec, double factor);
double magnitude(const std::vector<double>& vec);
// Unit vector pointing at vec1 from vec2 and the distance between them; if they coincide a
// random unit vector (components uniform in [-0.5, 0.5) before normalising) and 0.
std::pair<std::vector<double>, double> unit_vector_at(const std::vector<double>& vec1,
                                                      const std::vector<double>& vec2,
                                                      const vivaldi_random& random);
// A Float64 from rng: its top 53 bits as a fraction, uniform in [0, 1) and never 1.
double random_float64(std::mt19937_64& rng);
// Go's time.Duration(seconds * 1e9): truncation toward zero; NaN and out-of-range values give
// math.MinInt64, as Go on amd64 does (the language leaves it to the implementation).
std::chrono::nanoseconds duration_from_seconds(double seconds);
// Go's Duration.Seconds().
double duration_seconds(std::chrono::nanoseconds d);
}  // namespace vivaldi_detail

// serf ClientStats.
struct vivaldi_client_stats {
  // Times the coordinate was reset to the origin because an update made it invalid.
  int resets = 0;
};

// serf Client: this node's coordinate, moved by each (other node's coordinate, RTT) sample,
// with a moving-median latency filter per other node, the adjustment window and gravity.
// Not thread-safe. Keeps a reference to rng (or whatever random captures), which must outlive
// the client.
class vivaldi_client {
 public:
  // serf NewClient; throws std::invalid_argument for dimensionality 0 ("dimensionality must
  // be >0", as serf's error) or latency_filter_size 0.
  vivaldi_client(const vivaldi_config& config, std::mt19937_64& rng);
  vivaldi_client(const vivaldi_config& config, vivaldi_random random);

  coordinate get_coordinate() const { return coord_; }
  // Refuses (and keeps the old one) an incompatible or invalid coordinate.
  boost::system::error_code set_coordinate(const coordinate& c);
  void forget_node(const std::string& node) { latency_filter_samples_.erase(node); }
  vivaldi_client_stats stats() const { return stats_; }

  // serf Update: checks other (compatible, valid) and rtt (within [0, 10 s]) and on error
  // changes nothing; otherwise moves the coordinate (Vivaldi, then adjustment from the moved
  // coordinate, then gravity; an invalid result resets to the origin) and returns it.
  boost::system::result<coordinate> update(const std::string& node, const coordinate& other,
                                           std::chrono::nanoseconds rtt);

  // serf Client.DistanceTo: estimated RTT to other. Throws dimensionality_conflict_error.
  std::chrono::nanoseconds distance_to_duration(const coordinate& other) const;
  double distance_to(const coordinate& other) const;  // seconds

 private:
  friend struct vivaldi_client_test_access;  // serf's tests reach into the client too

  boost::system::error_code check_coordinate(const coordinate& c) const;
  double latency_filter(const std::string& node, double rtt_seconds);
  void update_vivaldi(const coordinate& other, double rtt_seconds);
  void update_adjustment(const coordinate& other, double rtt_seconds);
  void update_gravity();

  coordinate coord_;
  coordinate origin_;
  vivaldi_config config_;
  std::size_t adjustment_index_ = 0;
  std::vector<double> adjustment_samples_;
  std::map<std::string, std::vector<double>, std::less<>> latency_filter_samples_;
  vivaldi_client_stats stats_;
  vivaldi_random random_;
};

// What consul-esm's updateNodeCoordinate does with a successful ping: a fresh client set to
// the external node's coordinate `node`, then one Update with the agent's coordinate `local`
// as the other side (node name "local") and the ping's RTT. A fresh client has an empty
// latency filter, so the raw RTT is used. nullopt where consul-esm gives up with an error:
// `node` or `local` not of config.dimensionality dimensions, not finite, or rtt outside
// [0, 10 s].
std::optional<coordinate> update_external(const coordinate& node, const coordinate& local,
                                          std::chrono::nanoseconds rtt,
                                          const vivaldi_config& config, std::mt19937_64& rng);

}  // namespace esm::ping

namespace boost::system {
template <>
struct is_error_code_enum<esm::ping::vivaldi_errc> : std::true_type {};
}  // namespace boost::system
