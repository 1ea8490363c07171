import Synchronization

/// The fixed memory behind a `ChangeRing`: one sequence number and one value per slot.
///
/// This is the ring's only unsafe part. The ring's protocol guarantees that a value slot is
/// written by exactly one producer (the one that claimed its position) and read by the
/// consumer only after the slot's sequence number says the write is complete, so no two
/// threads touch a value at once.
final class RingSlots<Element: BitwiseCopyable>: @unchecked Sendable {
    let count: Int
    private let sequences: UnsafeMutablePointer<Atomic<UInt64>>
    private let values: UnsafeMutablePointer<Element>

    /// `count` slots; slot i starts with sequence i (empty, ready for position i).
    init(count: Int) {
        self.count = count
        sequences = .allocate(capacity: count)
        values = .allocate(capacity: count)
        for i in 0..<count { (sequences + i).initialize(to: Atomic(UInt64(i))) }
    }

    deinit {
        sequences.deinitialize(count: count)
        sequences.deallocate()
        values.deallocate()
    }

    /// The slot's sequence number (acquire: a value written before the matching store is visible).
    func sequence(_ index: Int) -> UInt64 {
        sequences[index].load(ordering: .acquiring)
    }

    /// Publishes the slot's new sequence number (release).
    func setSequence(_ index: Int, _ value: UInt64) {
        sequences[index].store(value, ordering: .releasing)
    }

    func read(_ index: Int) -> Element { values[index] }

    func write(_ index: Int, _ value: Element) { (values + index).initialize(to: value) }
}
