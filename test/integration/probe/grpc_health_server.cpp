// A real gRPC server with grpc++'s default health service, for the probe tests. Listens on
// 127.0.0.1 (an ephemeral port, printed as the first line on stdout), plaintext or TLS, and
// runs until SIGTERM or SIGINT.
//   grpc_health_server [--tls CERT KEY] [--serving=NAME]... [--not-serving=NAME]...
// NAME may be empty: the whole server's status.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>

namespace {
std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
}  // namespace

int main(int argc, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before grpc starts its threads

  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  std::vector<std::pair<std::string, bool>> statuses;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--tls" && i + 2 < argc) {
      grpc::SslServerCredentialsOptions opts;
      opts.pem_key_cert_pairs.push_back({slurp(argv[i + 2]), slurp(argv[i + 1])});
      creds = grpc::SslServerCredentials(opts);
      i += 2;
    } else if (a.rfind("--serving=", 0) == 0) {
      statuses.emplace_back(a.substr(10), true);
    } else if (a.rfind("--not-serving=", 0) == 0) {
      statuses.emplace_back(a.substr(14), false);
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", creds, &port);
  // grpc++ refuses to build a server without services or a polled completion queue; the
  // default health service is only added at start. This queue stays empty; it is drained.
  auto cq = builder.AddCompletionQueue();
  auto server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "cannot start the server\n";
    return 1;
  }
  auto* health = server->GetHealthCheckService();
  for (const auto& [name, serving] : statuses) health->SetServingStatus(name, serving);
  std::printf("%d\n", port);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  cq->Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
  }
  return 0;
}
