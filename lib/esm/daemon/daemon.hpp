// The daemon: the composition root of esmd as code, shaped like the ownership tree of
// DESIGN.md. It owns the io_context, the Consul client, the status registry and one task
// group of named children:
//
//     daemon
//     ├── membership   registration, liveness, the leader election and its leader work
//     │                (the assignment; in agentless mode also the reaping of dead instances)
//     ├── worker       this instance's share (its nodes and their checks), handed to the sink
//     ├── checks       the check engine, fed by the worker, with its status writer
//     └── pings        the node prober, fed by the worker: ICMP, externalNodeHealth,
//                      coordinates and reaping of nodes unreachable for too long
//
// Adding a child (the admin server) is one `spawn` in daemon.cpp.
//
// Stop sequence (SIGINT, SIGTERM): every child is cancelled with `total` (each child's root
// lets it through to the waits below it); each then makes its clean exit: the election
// releases the leader key before destroying its session, the engine and the prober flush their
// pending status writes, the instance deregisters. After the grace period (5 s) whatever still runs is
// cancelled with `terminal`, which cuts the clean-ups short; past grace + 1.5 s a watchdog
// thread ends the process even if the io_context cannot return. A second signal changes
// nothing. A child that ends by itself, or throws (a bug), stops the daemon the same way and
// makes it exit 11, for a supervisor to restart it.
#pragma once

#include <string>
#include <vector>

#include "esm/config/config.hpp"

namespace esm::daemon {

// Runs esmd until a stop. Returns the process exit code: 0 after a stop by signal, 11
// (config::exit_code_error) for a startup error (bad TLS material, incompatible Consul, a
// duplicate instance) or when a part stopped unexpectedly. `config_paths` are re-read on SIGHUP.
int run(config::config cfg, std::vector<std::string> config_paths);

}  // namespace esm::daemon
