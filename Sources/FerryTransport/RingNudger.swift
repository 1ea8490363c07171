import FerrySystem
import Glibc
import Logging
import Synchronization

/// Gets requests moving that the kernel queued on a ring queue while all its entries were taken.
///
/// The kernel hands a queued request to an entry only when that entry is committed
/// (COMMIT_AND_FETCH); an entry registered later takes only requests that arrive after it. When
/// blocked lock requests hold every entry of a queue, requests queued meanwhile (for example the
/// unlock that would release those waiters) would wait forever. So for each entry a blocked
/// lock parks (after fresh entries were registered), the nudger makes one cheap request of its
/// own from the queue's CPU (statfs of the mount root): it lands on the same queue, takes a
/// fresh entry, and its commit fetches the oldest queued request. Each nudge runs on a short
/// thread of its own: a nudge that is itself queued must not hold up the next one
/// (protocol/fuse-uring.md, "Queues").
final class RingNudger: Sendable {
    private let cpu: Int
    private let mountpoint: String
    /// Makes the nudges of a sandboxed server (which has no path to MOUNTPOINT).
    private let helper: HostHelper?
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)

    init(cpu: Int, mountpoint: String, helper: HostHelper? = nil, logger: Logger) {
        self.cpu = cpu
        self.mountpoint = mountpoint
        self.helper = helper
        self.logger = logger
    }

    /// Makes `count` requests on this CPU's queue (from the queue thread, after the fresh
    /// entries were submitted).
    func nudge(_ count: Int) {
        guard count > 0, !stopping.load(ordering: .relaxed) else { return }
        if let helper {
            for _ in 0..<count { helper.nudge(cpu: cpu) }
            return
        }
        for _ in 0..<count {
            do {
                let thread = try HostThread.spawn(name: "ferry-nudge-\(cpu)", stackSize: 64 << 10) { [self] in
                    self.statfsOnce()
                }
                thread.detach()
            } catch {
                logger.warning("ring queue \(cpu): cannot start a nudge thread: \(error)")
                return
            }
        }
    }

    /// No more nudges (the connection is ending).
    func stop() { stopping.store(true, ordering: .relaxed) }

    private func statfsOnce() {
        try? HostThread.pinCurrent(toCPU: cpu)
        // O_PATH: no OPENDIR; fstatfs then always reaches the server as STATFS. Opened per
        // nudge: a descriptor kept open would make the mount busy for umount.
        let fd = Glibc.open(mountpoint, HostFlags.oPath | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { Glibc.close(fd) }
        do { _ = try Host.statfs(fd) } catch { logger.debug("ring queue \(cpu): nudge: \(error)") }
    }
}
