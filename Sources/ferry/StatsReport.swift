import FerryFS
import FerryNotify
import FerrySystem
import Glibc
import Logging

/// Prints the server's counters (resource bounds in use, change notifications) to the log: on SIGUSR1, every few seconds with --stats, and
/// at exit with --stats.
struct StatsReport: Sendable {
    let notifier: ChangeNotifier?
    /// The served filesystem, whose resource bounds are reported.
    let fs: PassthroughFS
    let logger: Logger

    func print() {
        logger.notice("stats: bounds: \(fs.bounds.map(\.summary).joined(separator: ", "))")
        if let notifier {
            logger.notice("stats: notify: \(notifier.snapshot())")
        } else {
            logger.notice("stats: notify: off")
        }
    }

    /// Prints every `seconds` seconds on a thread of its own, for the process's lifetime.
    func startPeriodic(seconds: UInt32) throws(Errno) {
        let report = self
        _ = try HostThread.spawn(name: "ferry-stats") {
            while true {
                sleep(seconds)
                report.print()
            }
        }
    }
}
