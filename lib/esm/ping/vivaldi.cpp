#include "esm/ping/vivaldi.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace esm::ping {

namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "esm.vivaldi"; }
  std::string message(int ev) const override {
    // serf's texts, so that logs read like consul-esm's.
    switch (static_cast<vivaldi_errc>(ev)) {
      case vivaldi_errc::dimensionality_conflict: return "dimensions aren't compatible";
      case vivaldi_errc::invalid_coordinate: return "coordinate is invalid";
      case vivaldi_errc::rtt_out_of_range:
        return "round trip time not in valid range, duration is not a positive value less than 10s";
    }
    return "unknown vivaldi error";
  }
};

bool component_is_valid(double f) { return std::isfinite(f); }

// Go's math.Max, whose NaN and signed-zero rules differ from std::max's.
double go_max(double x, double y) {
  if (std::isinf(x) && x > 0) return x;
  if (std::isinf(y) && y > 0) return y;
  if (std::isnan(x) || std::isnan(y)) return std::numeric_limits<double>::quiet_NaN();
  if (x == 0 && x == y) return std::signbit(x) ? y : x;
  return x > y ? x : y;
}

}  // namespace

const boost::system::error_category& vivaldi_category() noexcept {
  static const category c;
  return c;
}

namespace vivaldi_detail {

std::vector<double> add(const std::vector<double>& vec1, const std::vector<double>& vec2) {
  std::vector<double> ret(vec1.size());
  for (std::size_t i = 0; i < ret.size(); ++i) ret[i] = vec1[i] + vec2[i];
  return ret;
}

std::vector<double> diff(const std::vector<double>& vec1, const std::vector<double>& vec2) {
  std::vector<double> ret(vec1.size());
  for (std::size_t i = 0; i < ret.size(); ++i) ret[i] = vec1[i] - vec2[i];
  return ret;
}

std::vector<double> mul(const std::vector<double>& vec, double factor) {
  std::vector<double> ret(vec.size());
  for (std::size_t i = 0; i < vec.size(); ++i) ret[i] = vec[i] * factor;
  return ret;
}

double magnitude(const std::vector<double>& vec) {
  double sum = 0.0;
  for (double v : vec) sum += v * v;
  return std::sqrt(sum);
}

std::pair<std::vector<double>, double> unit_vector_at(const std::vector<double>& vec1,
                                                      const std::vector<double>& vec2,
                                                      const vivaldi_random& random) {
  auto ret = diff(vec1, vec2);

  // If the coordinates aren't on top of each other we can normalize.
  if (double mag = magnitude(ret); mag > zero_threshold) return {mul(ret, 1.0 / mag), mag};

  // Otherwise, just return a random unit vector.
  for (double& r : ret) r = random() - 0.5;
  if (double mag = magnitude(ret); mag > zero_threshold) return {mul(ret, 1.0 / mag), 0.0};

  // And finally just give up and make a unit vector along the first dimension (serf: "this
  // should be exceedingly rare"; also the case of zero dimensions, where serf would panic).
  ret.assign(ret.size(), 0.0);
  if (!ret.empty()) ret[0] = 1.0;
  return {ret, 0.0};
}

double random_float64(std::mt19937_64& rng) {
  // Never 1, which generate_canonical may return.
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

std::chrono::nanoseconds duration_from_seconds(double seconds) {
  const double ns = seconds * seconds_to_nanoseconds;
  constexpr double limit = 9223372036854775808.0;  // 2^63
  if (!(ns >= -limit && ns < limit)) return std::chrono::nanoseconds(std::numeric_limits<std::int64_t>::min());
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

double duration_seconds(std::chrono::nanoseconds d) {
  const std::int64_t n = d.count();
  const std::int64_t sec = n / 1'000'000'000;
  const std::int64_t nsec = n % 1'000'000'000;
  return static_cast<double>(sec) + static_cast<double>(nsec) / 1e9;
}

}  // namespace vivaldi_detail

using namespace vivaldi_detail;

vivaldi_random float64_source(std::mt19937_64& rng) {
  return [&rng] { return random_float64(rng); };
}

coordinate new_coordinate(const vivaldi_config& config) {
  coordinate c;
  c.vec.assign(config.dimensionality, 0.0);
  c.error = config.vivaldi_error_max;
  c.adjustment = 0.0;
  c.height = config.height_min;
  return c;
}

bool is_valid(const coordinate& c) {
  for (double v : c.vec) {
    if (!component_is_valid(v)) return false;
  }
  return component_is_valid(c.error) && component_is_valid(c.adjustment) &&
         component_is_valid(c.height);
}

bool is_compatible_with(const coordinate& a, const coordinate& b) {
  return a.vec.size() == b.vec.size();
}

coordinate apply_force(const vivaldi_config& config, const coordinate& c, double force,
                       const coordinate& other, const vivaldi_random& random) {
  if (!is_compatible_with(c, other)) throw dimensionality_conflict_error();

  coordinate ret = c;
  auto [unit, mag] = unit_vector_at(c.vec, other.vec, random);
  ret.vec = add(ret.vec, mul(unit, force));
  if (mag > zero_threshold) {
    ret.height = (ret.height + other.height) * force / mag + ret.height;
    ret.height = go_max(ret.height, config.height_min);
  }
  return ret;
}

std::chrono::nanoseconds distance_to_duration(const coordinate& a, const coordinate& b) {
  if (!is_compatible_with(a, b)) throw dimensionality_conflict_error();

  double dist = raw_distance_to(a, b);
  const double adjusted_dist = dist + a.adjustment + b.adjustment;
  if (adjusted_dist > 0.0) dist = adjusted_dist;
  return duration_from_seconds(dist);
}

double distance_to(const coordinate& a, const coordinate& b) {
  return duration_seconds(distance_to_duration(a, b));
}

double raw_distance_to(const coordinate& a, const coordinate& b) {
  return magnitude(diff(a.vec, b.vec)) + a.height + b.height;
}

vivaldi_client::vivaldi_client(const vivaldi_config& config, std::mt19937_64& rng)
    : vivaldi_client(config, float64_source(rng)) {}

vivaldi_client::vivaldi_client(const vivaldi_config& config, vivaldi_random random)
    : coord_(new_coordinate(config)),
      origin_(new_coordinate(config)),
      config_(config),
      adjustment_samples_(config.adjustment_window_size, 0.0),
      random_(std::move(random)) {
  if (!(config.dimensionality > 0)) throw std::invalid_argument("dimensionality must be >0");
  if (!(config.latency_filter_size > 0)) throw std::invalid_argument("latency filter size must be >0");
}

boost::system::error_code vivaldi_client::set_coordinate(const coordinate& c) {
  if (auto ec = check_coordinate(c)) return ec;
  coord_ = c;
  return {};
}

boost::system::error_code vivaldi_client::check_coordinate(const coordinate& c) const {
  if (!is_compatible_with(coord_, c)) return vivaldi_errc::dimensionality_conflict;
  if (!is_valid(c)) return vivaldi_errc::invalid_coordinate;
  return {};
}

double vivaldi_client::latency_filter(const std::string& node, double rtt_seconds) {
  auto& samples = latency_filter_samples_[node];

  // Add the new sample and trim the list, if needed.
  samples.push_back(rtt_seconds);
  if (samples.size() > config_.latency_filter_size) samples.erase(samples.begin());

  // Sort a copy of the samples and return the median.
  auto sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  return sorted[sorted.size() / 2];
}

void vivaldi_client::update_vivaldi(const coordinate& other, double rtt_seconds) {
  const double dist = duration_seconds(ping::distance_to_duration(coord_, other));
  if (rtt_seconds < zero_threshold) rtt_seconds = zero_threshold;
  const double wrongness = std::abs(dist - rtt_seconds) / rtt_seconds;

  double total_error = coord_.error + other.error;
  if (total_error < zero_threshold) total_error = zero_threshold;
  const double weight = coord_.error / total_error;

  coord_.error = config_.vivaldi_ce * weight * wrongness + coord_.error * (1.0 - config_.vivaldi_ce * weight);
  if (coord_.error > config_.vivaldi_error_max) coord_.error = config_.vivaldi_error_max;

  const double delta = config_.vivaldi_cc * weight;
  const double force = delta * (rtt_seconds - dist);
  coord_ = apply_force(config_, coord_, force, other, random_);
}

void vivaldi_client::update_adjustment(const coordinate& other, double rtt_seconds) {
  if (config_.adjustment_window_size == 0) return;

  // Note that the existing adjustment factors don't figure in to this calculation so we use
  // the raw distance here (serf's comment).
  const double dist = raw_distance_to(coord_, other);
  adjustment_samples_[adjustment_index_] = rtt_seconds - dist;
  adjustment_index_ = (adjustment_index_ + 1) % config_.adjustment_window_size;

  double sum = 0.0;
  for (double sample : adjustment_samples_) sum += sample;
  coord_.adjustment = sum / (2.0 * static_cast<double>(config_.adjustment_window_size));
}

void vivaldi_client::update_gravity() {
  const double dist = duration_seconds(ping::distance_to_duration(origin_, coord_));
  const double force = -1.0 * std::pow(dist / config_.gravity_rho, 2.0);
  coord_ = apply_force(config_, coord_, force, origin_, random_);
}

boost::system::result<coordinate> vivaldi_client::update(const std::string& node,
                                                         const coordinate& other,
                                                         std::chrono::nanoseconds rtt) {
  if (auto ec = check_coordinate(other)) return ec;
  if (rtt < std::chrono::nanoseconds::zero() || rtt > max_rtt) return vivaldi_errc::rtt_out_of_range;
  // Here serf also increments the go-metrics counter serf.coordinate.zero-rtt when rtt is 0
  // (so it shows in consul-esm's metrics); this pure type leaves counting to the caller.

  const double rtt_seconds = latency_filter(node, duration_seconds(rtt));
  update_vivaldi(other, rtt_seconds);
  update_adjustment(other, rtt_seconds);
  update_gravity();
  if (!is_valid(coord_)) {
    ++stats_.resets;
    coord_ = new_coordinate(config_);
  }
  return coord_;
}

std::chrono::nanoseconds vivaldi_client::distance_to_duration(const coordinate& other) const {
  return ping::distance_to_duration(coord_, other);
}

double vivaldi_client::distance_to(const coordinate& other) const {
  return duration_seconds(distance_to_duration(other));
}

// What a fresh vivaldi_client does after set_coordinate(node) and update("local", local, rtt),
// step for step in the same floating-point order (the unit test compares them for equality),
// without building the client: no latency-filter map, no adjustment window, no copies. The
// prober calls it for every reply.
std::optional<coordinate> update_external(const coordinate& node, const coordinate& local,
                                          std::chrono::nanoseconds rtt,
                                          const vivaldi_config& config, std::mt19937_64& rng) {
  if (!(config.dimensionality > 0) || !(config.latency_filter_size > 0)) return std::nullopt;
  // set_coordinate: the node must have the configured dimension and be valid.
  if (node.vec.size() != config.dimensionality || !is_valid(node)) return std::nullopt;
  // update: the other side likewise, and the RTT within serf's limits.
  if (!is_compatible_with(node, local) || !is_valid(local)) return std::nullopt;
  if (rtt < std::chrono::nanoseconds::zero() || rtt > max_rtt) return std::nullopt;
  auto random = float64_source(rng);

  // The latency filter of a fresh client holds this one sample: its median is the sample.
  double rtt_seconds = duration_seconds(rtt);
  coordinate c = node;

  // update_vivaldi
  {
    const double dist = duration_seconds(ping::distance_to_duration(c, local));
    double r = rtt_seconds;
    if (r < zero_threshold) r = zero_threshold;
    const double wrongness = std::abs(dist - r) / r;
    double total_error = c.error + local.error;
    if (total_error < zero_threshold) total_error = zero_threshold;
    const double weight = c.error / total_error;
    c.error = config.vivaldi_ce * weight * wrongness + c.error * (1.0 - config.vivaldi_ce * weight);
    if (c.error > config.vivaldi_error_max) c.error = config.vivaldi_error_max;
    const double delta = config.vivaldi_cc * weight;
    const double force = delta * (r - dist);
    c = apply_force(config, c, force, local, random);
  }

  // update_adjustment: a zeroed window whose first sample is this one.
  if (config.adjustment_window_size > 0) {
    // serf sums the window: 0.0 + sample, then zeros, which add nothing.
    const double dist = raw_distance_to(c, local);
    const double sum = 0.0 + (rtt_seconds - dist);
    c.adjustment = sum / (2.0 * static_cast<double>(config.adjustment_window_size));
  }

  // update_gravity
  {
    auto origin = new_coordinate(config);
    const double dist = duration_seconds(ping::distance_to_duration(origin, c));
    const double force = -1.0 * std::pow(dist / config.gravity_rho, 2.0);
    c = apply_force(config, c, force, origin, random);
  }
  if (!is_valid(c)) c = new_coordinate(config);
  return c;
}

}  // namespace esm::ping
