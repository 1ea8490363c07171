import CFerryVhost

/// Virtio feature bits Ferry's device deals with (virtio 1.x, "Reserved Feature Bits").
public enum VirtioFeature {
    public static let indirectDescriptors: UInt64 = 1 << 28   // VIRTIO_RING_F_INDIRECT_DESC
    public static let eventIndex: UInt64 = 1 << 29            // VIRTIO_RING_F_EVENT_IDX
    public static let protocolFeatures: UInt64 = 1 << 30      // VHOST_USER_F_PROTOCOL_FEATURES
    public static let version1: UInt64 = 1 << 32              // VIRTIO_F_VERSION_1
}

/// Why a descriptor chain or a whole queue was refused.
public enum QueueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The ring itself cannot be used: the queue is broken until it is set up again.
    case badRing(String)
    /// The available ring is corrupt (an index too far ahead, a head out of range).
    case broken(String)
    /// One chain is unusable; it is returned to the guest with no bytes written.
    case badChain(head: UInt16, reason: String)

    public var description: String {
        switch self {
        case let .badRing(why): return "queue cannot be set up: \(why)"
        case let .broken(why): return "queue broken: \(why)"
        case let .badChain(head, why): return "descriptor chain \(head): \(why)"
        }
    }
}

/// One descriptor chain taken from the available ring: the device-readable buffers (the
/// request) followed by the device-writable ones (room for the reply), as host memory ranges
/// already checked against the guest's memory table.
public struct DescriptorChain {
    public let head: UInt16
    public var readable: [UnsafeMutableRawBufferPointer] = []
    public var writable: [UnsafeMutableRawBufferPointer] = []
    public var readableLength = 0
    public var writableLength = 0

    public init(head: UInt16) { self.head = head }

    /// Calls `body` with each piece of the readable (or writable) buffers that lies after their
    /// first `offset` bytes, in order: the memory a READ's or WRITE's data occupies behind the
    /// FUSE headers. Returns how many pieces there were.
    @discardableResult
    public func forEachSegment(writable: Bool, after offset: Int, _ body: (UnsafeMutableRawBufferPointer) -> Void) -> Int {
        var skip = offset, pieces = 0
        for segment in writable ? self.writable : readable {
            if skip >= segment.count {
                skip -= segment.count
                continue
            }
            body(UnsafeMutableRawBufferPointer(rebasing: segment[skip...]))
            skip = 0
            pieces += 1
        }
        return pieces
    }

    /// Copies up to `buffer.count` readable bytes into `buffer`; returns how many.
    public func copyReadable(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        var at = 0
        for segment in readable {
            let n = min(segment.count, buffer.count - at)
            if n <= 0 { break }
            UnsafeMutableRawBufferPointer(rebasing: buffer[at..<(at + n)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: segment[0..<n]))
            at += n
        }
        return at
    }

    /// Copies `bytes` into the writable buffers; returns the count written (all of `bytes`,
    /// or nil when they do not fit).
    public func writeReply(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count <= writableLength else { return nil }
        var at = 0
        for segment in writable where at < bytes.count {
            let n = min(segment.count, bytes.count - at)
            UnsafeMutableRawBufferPointer(rebasing: segment[0..<n]).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
            at += n
        }
        return at
    }
}

/// A split virtqueue (virtio 1.x, 2.7) served by the device side: descriptor table, available
/// ring (driver → device) and used ring (device → driver), in guest memory shared with the
/// guest's CPUs. Used by one thread at a time.
///
/// Layout, little-endian: descriptor `{ u64 addr; u32 len; u16 flags; u16 next }` (16 bytes);
/// available `{ u16 flags; u16 idx; u16 ring[size]; u16 used_event }`; used `{ u16 flags;
/// u16 idx; { u32 id; u32 len } ring[size]; u16 avail_event }`. Every pointer is derived from
/// `GuestMemory`, which checks ranges; chain walks are bounded by the queue size (and the
/// indirect table's size), so a looping or endless chain is an error, not a hang.
public final class SplitQueue {
    public static let maxSize = 32768
    static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4
    static let availNoInterrupt: UInt16 = 1

    /// The memory table chains are taken with (replaced between chains by `adopt`).
    public private(set) var memory: GuestMemory
    public let size: Int
    public let eventIndex: Bool
    public let indirect: Bool
    private let address: VringAddress
    private var descriptors: UnsafeMutableRawPointer
    private var available: UnsafeMutableRawPointer
    private var used: UnsafeMutableRawPointer
    /// The next available-ring entry to take (what GET_VRING_BASE reports).
    public private(set) var lastAvailable: UInt16
    /// The used index Ferry publishes next.
    public private(set) var usedIndex: UInt16
    private var signalledUsed: UInt16 = 0
    private var signalledUsedValid = false
    /// Set once the available ring was found corrupt; nothing more is taken from it.
    public private(set) var isBroken = false

    /// Checks and maps a queue whose rings lie at the front-end's virtual addresses `address`.
    public init(memory: GuestMemory, size: Int, address: VringAddress, base: UInt16,
                eventIndex: Bool, indirect: Bool) throws(QueueError) {
        guard size > 0, size <= SplitQueue.maxSize, size & (size - 1) == 0 else {
            throw .badRing("size \(size) is not a power of two between 1 and \(SplitQueue.maxSize)")
        }
        guard address.descriptorTable % 16 == 0, address.availableRing % 2 == 0, address.usedRing % 4 == 0 else {
            throw .badRing("misaligned ring addresses")
        }
        let (d, a, u) = try SplitQueue.rings(in: memory, size: size, address: address)
        self.memory = memory
        self.address = address
        self.size = size
        self.eventIndex = eventIndex
        self.indirect = indirect
        descriptors = d
        available = a
        used = u
        lastAvailable = base
        usedIndex = ferry_vhost_load_acquire_u16(u + 2)
        // After a restart the guest's used index is where the device left it.
    }

    private var availableIndex: UInt16 { UInt16(littleEndian: ferry_vhost_load_acquire_u16(available + 2)) }
    private var availableFlags: UInt16 { UInt16(littleEndian: available.loadUnaligned(fromByteOffset: 0, as: UInt16.self)) }
    private var usedEvent: UInt16 { UInt16(littleEndian: available.loadUnaligned(fromByteOffset: 4 + 2 * size, as: UInt16.self)) }

    /// Whether the driver has made chains available that were not taken yet.
    public var hasAvailable: Bool { !isBroken && availableIndex != lastAvailable }

    /// Takes the next chain, or nil when none is available. `.badChain` means that chain was
    /// consumed and must be returned (`push(head:, length: 0)`); `.broken` that the queue must
    /// not be used any more.
    public func pop() throws(QueueError) -> DescriptorChain? {
        guard !isBroken else { return nil }
        let availIdx = availableIndex
        let pending = availIdx &- lastAvailable
        if pending == 0 { return nil }
        guard Int(pending) <= size else {
            isBroken = true
            throw .broken("available index \(availIdx) is \(pending) entries ahead of \(lastAvailable) (size \(size))")
        }
        let slot = Int(lastAvailable) & (size - 1)
        let head = UInt16(littleEndian: available.loadUnaligned(fromByteOffset: 4 + 2 * slot, as: UInt16.self))
        guard Int(head) < size else {
            isBroken = true
            throw .broken("available ring entry \(slot) names descriptor \(head) (size \(size))")
        }
        lastAvailable &+= 1
        if eventIndex { publishAvailEvent() }
        return try walk(head: head)
    }

    /// Asks the driver to kick when it adds chains, then reports whether chains arrived in the
    /// meantime (the caller then takes them instead of sleeping).
    public func armNotification() -> Bool {
        if eventIndex { publishAvailEvent() }
        ferry_vhost_fence()
        return hasAvailable
    }

    private func publishAvailEvent() {
        ferry_vhost_store_release_u16(used + 4 + 8 * size, lastAvailable.littleEndian)
    }

    private struct Descriptor {
        var address: UInt64
        var length: UInt32
        var flags: UInt16
        var next: UInt16
    }

    /// The three rings of a queue of `size` at `address`, in `memory`.
    private static func rings(in memory: GuestMemory, size: Int, address: VringAddress) throws(QueueError)
        -> (UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeMutableRawPointer) {
        let n = UInt64(size)
        guard let d = memory.user(address.descriptorTable, length: 16 * n) else {
            throw .badRing("descriptor table 0x\(String(address.descriptorTable, radix: 16)) is outside guest memory")
        }
        guard let a = memory.user(address.availableRing, length: 6 + 2 * n) else {
            throw .badRing("available ring 0x\(String(address.availableRing, radix: 16)) is outside guest memory")
        }
        guard let u = memory.user(address.usedRing, length: 6 + 8 * n) else {
            throw .badRing("used ring 0x\(String(address.usedRing, radix: 16)) is outside guest memory")
        }
        return (d, a, u)
    }

    /// Takes chains through `newMemory` from now on (a region added or removed while the queue
    /// runs), the rings translated anew; the indexes stay. Chains taken before keep pointing into
    /// the table they were taken with (the caller keeps it alive until they are answered). If the
    /// rings are no longer inside guest memory the queue is broken and keeps the old table.
    public func adopt(_ newMemory: GuestMemory) throws(QueueError) {
        let (d, a, u) = try SplitQueue.rings(in: newMemory, size: size, address: address)
        memory = newMemory
        descriptors = d
        available = a
        used = u
    }

    /// Marks the queue broken: nothing more is taken from it.
    public func markBroken() { isBroken = true }

    private static func descriptor(in table: UnsafeMutableRawPointer, _ index: Int) -> Descriptor {
        let p = table + 16 * index
        return Descriptor(address: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                          length: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                          flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                          next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }

    /// Follows the chain at `head`, in the direct table or one indirect table.
    private func walk(head: UInt16) throws(QueueError) -> DescriptorChain {
        var chain = DescriptorChain(head: head)
        var table = descriptors
        var tableSize = size
        var index = Int(head)
        var visited = 0
        var inIndirect = false
        while true {
            visited += 1
            guard visited <= tableSize else { throw .badChain(head: head, reason: "chain longer than its table (\(tableSize)): a loop") }
            let d = SplitQueue.descriptor(in: table, index)
            if d.flags & SplitQueue.flagIndirect != 0 {
                guard indirect else { throw .badChain(head: head, reason: "indirect descriptor, but INDIRECT_DESC was not negotiated") }
                guard !inIndirect else { throw .badChain(head: head, reason: "indirect descriptor inside an indirect table") }
                guard d.flags & SplitQueue.flagNext == 0 else { throw .badChain(head: head, reason: "indirect descriptor with NEXT") }
                guard d.length > 0, d.length % 16 == 0, d.length / 16 <= UInt32(SplitQueue.maxSize) else {
                    throw .badChain(head: head, reason: "indirect table of \(d.length) bytes")
                }
                guard let t = memory.guest(d.address, length: UInt64(d.length)) else {
                    throw .badChain(head: head, reason: "indirect table at 0x\(String(d.address, radix: 16)) is outside guest memory")
                }
                guard d.address % 8 == 0 else { throw .badChain(head: head, reason: "misaligned indirect table") }
                table = t
                tableSize = Int(d.length / 16)
                index = 0
                visited = 0
                inIndirect = true
                continue
            }
            if d.length > 0 {
                let writable = d.flags & SplitQueue.flagWrite != 0
                if !writable && !chain.writable.isEmpty {
                    throw .badChain(head: head, reason: "device-readable descriptor after a device-writable one")
                }
                let inside: Bool
                if writable {
                    let (sum, overflow) = chain.writableLength.addingReportingOverflow(Int(d.length))
                    guard !overflow, sum <= Int(UInt32.max) else { throw .badChain(head: head, reason: "writable length overflows") }
                    chain.writableLength = sum
                    inside = memory.segments(d.address, length: UInt64(d.length), into: &chain.writable)
                } else {
                    let (sum, overflow) = chain.readableLength.addingReportingOverflow(Int(d.length))
                    guard !overflow, sum <= Int(UInt32.max) else { throw .badChain(head: head, reason: "readable length overflows") }
                    chain.readableLength = sum
                    inside = memory.segments(d.address, length: UInt64(d.length), into: &chain.readable)
                }
                guard inside else {
                    throw .badChain(head: head, reason: "buffer 0x\(String(d.address, radix: 16)) + \(d.length) is outside guest memory")
                }
            }
            guard d.flags & SplitQueue.flagNext != 0 else { return chain }
            guard Int(d.next) < tableSize else { throw .badChain(head: head, reason: "next descriptor \(d.next) is outside its table (\(tableSize))") }
            index = Int(d.next)
        }
    }

    /// Returns a chain to the driver with `length` bytes written into its writable buffers.
    public func push(head: UInt16, length: UInt32) {
        let slot = Int(usedIndex) & (size - 1)
        let entry = used + 4 + 8 * slot
        entry.storeBytes(of: UInt32(head).littleEndian, toByteOffset: 0, as: UInt32.self)
        entry.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        usedIndex &+= 1
        ferry_vhost_store_release_u16(used + 2, usedIndex.littleEndian)
    }

    /// Whether the driver wants an interrupt for the entries pushed since the last one
    /// (EVENT_IDX: the used_event it published; else the NO_INTERRUPT flag). Call after pushing.
    public func needsSignal() -> Bool {
        ferry_vhost_fence()
        guard eventIndex else { return availableFlags & SplitQueue.availNoInterrupt == 0 }
        let old = signalledUsed, new = usedIndex
        let valid = signalledUsedValid
        signalledUsed = new
        signalledUsedValid = true
        if !valid { return true }
        // vring_need_event: new_idx - event_idx - 1 < new_idx - old_idx (mod 2^16).
        return (new &- usedEvent &- 1) < (new &- old)
    }
}
