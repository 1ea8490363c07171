import Synchronization

/// The nodes whose attributes, as last sent to the kernel, carried S_ISUID or S_ISGID.
///
/// The host clears those bits when someone without CAP_FSETID writes, truncates, fallocates or
/// copies into a file, and the kernel does not know: it keeps the cached mode and would honour
/// it on exec. After such a change to a node listed here, the engine drops the kernel's
/// attributes (FUSE_NOTIFY_INVAL_INODE). A node is never taken off the list: an extra
/// invalidation costs one GETATTR, a missed one leaves a set-id bit the host already cleared.
/// Nothing is looked up until the first set-id file is seen, so most mounts pay nothing.
final class SetIDReports: Sendable {
    private let nodes = Mutex<Set<UInt64>>([])
    private let any = Atomic<Bool>(false)

    /// S_ISUID | S_ISGID.
    static let setIDBits: UInt32 = 0o6000

    /// Notes that attributes with `mode` are being sent to the kernel for `nodeID`.
    func reporting(nodeID: UInt64, mode: UInt32) {
        guard mode & SetIDReports.setIDBits != 0 else { return }
        nodes.withLock { _ = $0.insert(nodeID) }
        any.store(true, ordering: .releasing)
    }

    /// Whether the kernel may hold set-id bits for `nodeID`.
    func mayHoldSetID(_ nodeID: UInt64) -> Bool {
        guard any.load(ordering: .acquiring) else { return false }
        return nodes.withLock { $0.contains(nodeID) }
    }
}
