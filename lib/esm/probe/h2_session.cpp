#include "esm/probe/h2_session.hpp"

#include <cstring>

namespace esm::probe::detail {

h2_client::h2_client(std::size_t max_data) : max_data_(max_data) {
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) return;
  nghttp2_session_callbacks_set_on_header_callback(cbs, &h2_client::on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &h2_client::on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &h2_client::on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &h2_client::on_stream_close);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Bound what a peer can make us hold: header list size and reserved streams.
  nghttp2_option_set_max_send_header_block_length(opt, 16 * 1024);
  nghttp2_option_set_max_reserved_remote_streams(opt, 0);
  if (nghttp2_session_client_new2(&session_, cbs, this, opt) != 0) session_ = nullptr;
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (!session_) return;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(max_header_list)},
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2) != 0) {
    nghttp2_session_del(session_);
    session_ = nullptr;
  }
}

h2_client::~h2_client() {
  if (session_) nghttp2_session_del(session_);
}

std::int32_t h2_client::submit_request(
    const std::vector<std::pair<std::string, std::string>>& headers, std::string body) {
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size());
  for (const auto& [k, v] : headers) {
    nva.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(k.data())),
                   reinterpret_cast<std::uint8_t*>(const_cast<char*>(v.data())), k.size(),
                   v.size(), NGHTTP2_NV_FLAG_NONE});
  }
  nghttp2_data_provider provider{};
  provider.read_callback = &h2_client::read_body;
  std::int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), &provider, nullptr);
  if (id > 0) {
    bodies_[id] = {std::move(body), 0};
    streams_[id];
  }
  return id;
}

bool h2_client::submit_ping() {
  const std::uint8_t opaque[8] = {'e', 's', 'm', 'd', 'p', 'i', 'n', 'g'};
  return nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, opaque) == 0;
}

const h2_client::response* h2_client::find(std::int32_t stream) const {
  auto it = streams_.find(stream);
  return it == streams_.end() ? nullptr : &it->second;
}

ssize_t h2_client::read_body(nghttp2_session*, std::int32_t stream, std::uint8_t* buf,
                             std::size_t length, std::uint32_t* flags, nghttp2_data_source*,
                             void* user) {
  auto* self = static_cast<h2_client*>(user);
  auto it = self->bodies_.find(stream);
  if (it == self->bodies_.end()) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }
  auto& [body, offset] = it->second;
  std::size_t n = std::min(length, body.size() - offset);
  std::memcpy(buf, body.data() + offset, n);
  offset += n;
  if (offset == body.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

int h2_client::on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                         std::uint8_t, void* user) {
  auto* self = static_cast<h2_client*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  auto it = self->streams_.find(frame->hd.stream_id);
  if (it == self->streams_.end()) return 0;
  // nghttp2 does not hold a peer to the header list size we advertise; each field is counted
  // here, before it is copied (test/integration/probe/bad_peer_test.cpp: a block of 64 KB on
  // the wire decompressed to 300 MB, 80 000 references to one 4000-byte field).
  auto& r = it->second;
  auto& used = frame->headers.cat == NGHTTP2_HCAT_RESPONSE ? r.header_bytes : r.trailer_bytes;
  used += namelen + valuelen + 32;
  if (used > max_header_list) {
    r.headers_overflow = true;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream; no more fields of it
  }
  std::string k(reinterpret_cast<const char*>(name), namelen);
  std::string v(reinterpret_cast<const char*>(value), valuelen);
  if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
    it->second.headers.emplace(std::move(k), std::move(v));
  else
    it->second.trailers.emplace(std::move(k), std::move(v));
  return 0;
}

int h2_client::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream,
                             const std::uint8_t* data, std::size_t len, void* user) {
  auto* self = static_cast<h2_client*>(user);
  auto it = self->streams_.find(stream);
  if (it == self->streams_.end()) return 0;
  auto& r = it->second;
  if (r.data.size() + len > self->max_data_) {
    if (!r.data_overflow) nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream, NGHTTP2_CANCEL);
    r.data_overflow = true;
    return 0;
  }
  r.data.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int h2_client::on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<h2_client*>(user);
  self->got_frame_ = true;
  if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) self->ping_acked_ = true;
  if (frame->hd.type == NGHTTP2_GOAWAY) self->goaway_ = true;
  return 0;
}

int h2_client::on_stream_close(nghttp2_session*, std::int32_t stream, std::uint32_t error_code,
                               void* user) {
  auto* self = static_cast<h2_client*>(user);
  if (auto it = self->streams_.find(stream); it != self->streams_.end()) {
    it->second.closed = true;
    it->second.rst_error = error_code;
  }
  self->bodies_.erase(stream);
  return 0;
}

}  // namespace esm::probe::detail
