import Synchronization

/// A bounded queue from many producers to one consumer, with no locks on the push path.
///
/// The capacity is a fixed power of two. Each slot carries a sequence number (the bounded
/// queue of D. Vyukov): a producer claims the next position with one compare-and-swap, writes
/// the slot, then publishes it by setting the slot's sequence to position + 1; the consumer
/// takes a slot once its sequence says it is published and frees it by setting the sequence to
/// position + capacity. A push into a full ring fails and raises the overflow flag, which the
/// consumer takes (and clears) to know that changes were lost and everything must be
/// revalidated. protocol/notify-ring.md describes the layout and rules.
public final class ChangeRing<Element: BitwiseCopyable>: Sendable {
    /// Number of slots (a power of two).
    public let capacity: Int
    private let mask: UInt64
    private let slots: RingSlots<Element>
    private let pushPosition = Atomic<UInt64>(0)
    private let popPosition = Atomic<UInt64>(0)
    private let overflowed = Atomic<Bool>(false)
    private let peak = Atomic<Int>(0)

    /// A ring of `capacity` slots, rounded up to a power of two (at least 2).
    public init(capacity: Int) {
        var size = 2
        while size < capacity { size <<= 1 }
        self.capacity = size
        mask = UInt64(size - 1)
        slots = RingSlots(count: size)
    }

    /// Adds `element`; false (and the overflow flag set) when the ring is full.
    @discardableResult
    public func push(_ element: Element) -> Bool {
        var position = pushPosition.load(ordering: .relaxed)
        while true {
            let index = Int(position & mask)
            let sequence = slots.sequence(index)
            if sequence == position {
                let (claimed, current) = pushPosition.weakCompareExchange(
                    expected: position, desired: position + 1, ordering: .relaxed)
                if claimed {
                    slots.write(index, element)
                    slots.setSequence(index, position + 1)
                    notePeak(position + 1)
                    return true
                }
                position = current
            } else if sequence < position {
                // The slot still holds the element from one lap ago: the ring is full.
                overflowed.store(true, ordering: .releasing)
                return false
            } else {
                position = pushPosition.load(ordering: .relaxed)
            }
        }
    }

    /// Takes the oldest element, or nil when the ring is empty. Only one thread may pop.
    public func pop() -> Element? {
        let position = popPosition.load(ordering: .relaxed)
        let index = Int(position & mask)
        guard slots.sequence(index) == position + 1 else { return nil }
        let element = slots.read(index)
        slots.setSequence(index, position + UInt64(capacity))
        popPosition.store(position + 1, ordering: .releasing)
        return element
    }

    /// Sets the overflow flag without a push: a producer that lost elements before they
    /// reached the ring (e.g. its own source overflowed) reports it the same way.
    public func raiseOverflow() {
        overflowed.store(true, ordering: .releasing)
    }

    /// Whether a push failed since the last call, clearing the flag.
    public func takeOverflow() -> Bool {
        overflowed.exchange(false, ordering: .acquiringAndReleasing)
    }

    /// Elements pushed and not yet popped (a snapshot).
    public var occupancy: Int {
        let popped = popPosition.load(ordering: .acquiring)
        let pushed = pushPosition.load(ordering: .acquiring)
        return pushed >= popped ? Int(pushed - popped) : 0
    }

    /// The most elements the ring has held at once.
    public var highWaterMark: Int { peak.load(ordering: .relaxed) }

    private func notePeak(_ pushedThrough: UInt64) {
        let popped = popPosition.load(ordering: .relaxed)
        // The consumer frees a slot just before it advances its position, so a snapshot can
        // count one slot twice; nothing can hold more than the capacity.
        let held = pushedThrough >= popped ? min(Int(pushedThrough - popped), capacity) : 0
        var known = peak.load(ordering: .relaxed)
        while held > known {
            let (done, current) = peak.weakCompareExchange(expected: known, desired: held, ordering: .relaxed)
            if done { return }
            known = current
        }
    }
}
