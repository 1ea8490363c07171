/// One guest memory region as the front-end describes it.
public struct MemoryRegion: Sendable, Equatable {
    /// Where the region starts in guest physical memory (descriptor addresses).
    public var guestAddress: UInt64
    public var size: UInt64
    /// Where QEMU mapped it in its own address space (ring addresses of SET_VRING_ADDR).
    public var userAddress: UInt64
    /// Offset of the region in its descriptor's file.
    public var mmapOffset: UInt64

    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestAddress = guestAddress; self.size = size
        self.userAddress = userAddress; self.mmapOffset = mmapOffset
    }

    /// The offset of `[address, address + length)` inside a region starting at `start`, if the
    /// whole range lies inside it. Overflow-safe for any inputs.
    @inline(__always)
    static func offset(of address: UInt64, length: UInt64, start: UInt64, size: UInt64) -> UInt64? {
        guard address >= start, length <= size else { return nil }
        let offset = address - start
        guard offset <= size - length else { return nil }
        return offset
    }

    func overlapsGuest(_ other: MemoryRegion) -> Bool {
        guestAddress < other.guestAddress &+ other.size && other.guestAddress < guestAddress &+ size
    }
}

/// The guest's memory as mapped into Ferry: every access from a ring or a descriptor goes
/// through `guest(_:length:)` or `user(_:length:)`, which check the whole range against the
/// regions (no access outside a mapped region, no address arithmetic that can wrap). Immutable;
/// a new memory table makes a new `GuestMemory`, and the mappings are released (`release`) when
/// the last queue using them lets go.
public final class GuestMemory: @unchecked Sendable {
    public struct Mapped: @unchecked Sendable {
        public let region: MemoryRegion
        /// Ferry's address of the region's first byte.
        public let host: UnsafeMutableRawPointer
        public init(region: MemoryRegion, host: UnsafeMutableRawPointer) { self.region = region; self.host = host }
    }

    public let regions: [Mapped]
    private let release: () -> Void

    public init(regions: [Mapped], release: @escaping () -> Void = {}) {
        self.regions = regions
        self.release = release
    }

    deinit { release() }

    /// Ferry's pointer to guest physical `[address, address + length)`, if it lies inside one
    /// region.
    public func guest(_ address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        pointer(address, length: length, guestPhysical: true)
    }

    /// Ferry's pointer to the front-end's virtual `[address, address + length)` (ring addresses).
    public func user(_ address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        pointer(address, length: length, guestPhysical: false)
    }

    /// The mapping of `[address, address + length)`, a guest physical or a front-end virtual
    /// range, if one region holds all of it.
    private func pointer(_ address: UInt64, length: UInt64, guestPhysical: Bool) -> UnsafeMutableRawPointer? {
        for mapped in regions {
            let start = guestPhysical ? mapped.region.guestAddress : mapped.region.userAddress
            if let offset = MemoryRegion.offset(of: address, length: length, start: start,
                                                size: mapped.region.size) {
                return mapped.host + Int(offset)
            }
        }
        return nil
    }

    /// Appends the host segments of guest `[address, address + length)`, which may span
    /// adjacent regions; false if any byte lies outside guest memory.
    public func segments(_ address: UInt64, length: UInt64, into out: inout [UnsafeMutableRawBufferPointer]) -> Bool {
        var address = address, left = length
        while left > 0 {
            guard let mapped = regions.first(where: {
                address >= $0.region.guestAddress && address - $0.region.guestAddress < $0.region.size
            }) else { return false }
            let offset = address - mapped.region.guestAddress
            let n = min(left, mapped.region.size - offset)
            out.append(UnsafeMutableRawBufferPointer(start: mapped.host + Int(offset), count: Int(n)))
            left -= n
            let (next, overflow) = address.addingReportingOverflow(n)
            if overflow && left > 0 { return false }
            address = next
        }
        return true
    }
}
