/// A source of host-side changes: reads them from the kernel, reduces them to the nodes the
/// kernel holds and pushes `ChangeRecord`s into the sink, until the sink's stop is signalled.
protocol HostWatcher: Sendable {
    /// Which mechanism runs, for the log.
    var mechanism: String { get }
    /// Blocks, feeding `sink`, until `sink.stop` is signalled.
    func run(into sink: ChangeSink)
}
