import FerrySystem
import Glibc

/// A source of host-side changes: reads them from the kernel, reduces them to the nodes the
/// kernel holds and pushes `ChangeRecord`s into the sink, until the sink's stop is signalled.
protocol HostWatcher: Sendable {
    /// Which mechanism runs, for the log.
    var mechanism: String { get }
    /// Blocks, feeding `sink`, until `sink.stop` is signalled.
    func run(into sink: ChangeSink)
}

extension HostWatcher {
    /// The read loop every watcher runs: waits until `fd` (a fanotify or inotify descriptor) is
    /// readable or the sink is stopped, reads what is queued, lets `handle` reduce it (true when
    /// it pushed something), then wakes the invalidator.
    ///
    /// After a read that returned events it pauses for `pauseMicroseconds`, so a burst gathers:
    /// at most ~1000 reads a second however fast events come, for at most 1 ms of added delay
    /// (a lone event is handled at once). Measured on the untar of /usr/include through the
    /// mount (tmpfs source, fanotify): without the pause the watcher woke once per event (58,000
    /// reads) and spent 1.3 s of CPU; with it, 0.37 s (and the kernel merged the queued events to
    /// 14,500).
    ///
    /// After a read that pushed nothing (only the mount's own changes, or files the kernel does
    /// not hold) the pause is 4 ms: a metadata workload on the mount then wakes the watcher about
    /// 250 times a second instead of 1000, and a host change that comes during such a pause is
    /// seen at most 4 ms later.
    func readEvents(from fd: Int32, into sink: ChangeSink, _ handle: (UnsafeRawBufferPointer) -> Bool) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let ready = Host.waitReadable([fd, sink.stop.fd.rawValue], timeoutMilliseconds: -1)
            if ready.count > 1 && ready[1] { return }
            guard let n = try? Host.readAvailable(fd, into: buffer), n > 0 else { continue }
            let pushed = handle(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            if pushed { sink.flush() }
            usleep(pushed ? pauseMicroseconds : quietPauseMicroseconds)
        }
    }
}

/// Pause after each read that returned events (see `readEvents`).
private let pauseMicroseconds: UInt32 = 1000
/// Pause after a read whose events changed nothing the kernel caches (Ferry's own changes, or
/// files it does not hold): such bursts go on for as long as a workload on the mount runs.
private let quietPauseMicroseconds: UInt32 = 4000
