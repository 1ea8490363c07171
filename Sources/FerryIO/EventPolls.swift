/// The eventfds an io_uring engine polls through its own ring while its thread sleeps there
/// (`UringIOEngine.sleep`): one one-shot poll per descriptor, armed until it fires, told apart
/// from data operations by its tag (the top bit set, the descriptor below; data operations are
/// tagged with their slot).
struct EventPolls {
    private static let tagBit: UInt64 = 1 << 63
    private var armedDescriptors: Set<Int32> = []
    private var fired: [Int32] = []

    /// The completion tag of the poll of `fd`.
    static func tag(of fd: Int32) -> UInt64 { tagBit | UInt64(UInt32(bitPattern: fd)) }

    /// The descriptor a poll's tag names, or nil for a data operation's tag.
    static func descriptor(ofTag tag: UInt64) -> Int32? {
        tag & tagBit != 0 ? Int32(bitPattern: UInt32(truncatingIfNeeded: tag)) : nil
    }

    func isArmed(_ fd: Int32) -> Bool { armedDescriptors.contains(fd) }

    /// A poll of `fd` was handed to the ring.
    mutating func armed(_ fd: Int32) { armedDescriptors.insert(fd) }

    /// The poll of `fd` completed (readable, or ended with an error: either way the owner
    /// looks, and the next sleep arms it again).
    mutating func fired(_ fd: Int32) {
        armedDescriptors.remove(fd)
        fired.append(fd)
    }

    var anyFired: Bool { !fired.isEmpty }

    /// The descriptors whose polls fired since the last call.
    mutating func takeFired() -> [Int32] {
        defer { fired.removeAll(keepingCapacity: true) }
        return fired
    }
}
