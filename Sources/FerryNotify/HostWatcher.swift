/// A source of host-side changes: reads them from the kernel, reduces them to the nodes the
/// kernel holds and pushes `ChangeRecord`s into the sink, until the sink's stop is signalled.
protocol HostWatcher: Sendable {
    /// Which mechanism runs, for the log.
    var mechanism: String { get }
    /// Blocks, feeding `sink`, until `sink.stop` is signalled.
    func run(into sink: ChangeSink)
}

/// How watchers pace their reads.
enum HostWatcherPacing {
    /// Pause after each read that returned events. Measured on the untar of /usr/include through
    /// the mount (58,000 own events): without it the watcher woke once per event and spent 1.3 s
    /// of CPU; see benchmarks/results for the figures with it.
    static let pauseMicroseconds: UInt32 = 1000
}
