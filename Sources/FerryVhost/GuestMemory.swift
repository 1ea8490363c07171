import Glibc

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

    func overlapsUser(_ other: MemoryRegion) -> Bool {
        userAddress < other.userAddress &+ other.size && other.userAddress < userAddress &+ size
    }

    /// Why the front-end's region cannot be mapped (empty, or an end past 2^64 in guest or
    /// front-end addresses, or `size + mmap_offset` past 2^63), or nil.
    public var invalidity: String? {
        guard size > 0 else { return "is empty" }
        guard !guestAddress.addingReportingOverflow(size).overflow,
              !userAddress.addingReportingOverflow(size).overflow,
              !mmapOffset.addingReportingOverflow(size).overflow,
              mmapOffset.addingReportingOverflow(size).partialValue <= UInt64(Int64.max) else {
            return "wraps around the address space"
        }
        return nil
    }
}

/// One mmap of a front-end's memory file: unmapped when the last `GuestMemory` holding it (and
/// with it the last request whose buffers lie in it) is gone.
public final class RegionMapping: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    private let unmap: Bool

    /// Takes over `[base, base + length)`, mapped by the caller; `unmap`: munmap it at the end.
    public init(base: UnsafeMutableRawPointer, length: Int, unmap: Bool = true) {
        self.base = base
        self.length = length
        self.unmap = unmap
    }

    /// Maps `length` bytes of `fd` from offset 0, shared, read and write.
    public static func map(fd: Int32, length: Int) -> RegionMapping? {
        guard let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0), p != MAP_FAILED else {
            return nil
        }
        return RegionMapping(base: p, length: length)
    }

    deinit { if unmap { munmap(base, length) } }
}

/// The guest's memory as mapped into Ferry: every access from a ring or a descriptor goes
/// through `guest(_:length:)` or `user(_:length:)`, which check the whole range against the
/// regions (no access outside a mapped region, no address arithmetic that can wrap). Immutable;
/// a new memory table (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG) makes a new `GuestMemory`, and
/// each region's mapping (`RegionMapping`) is released when the last table holding it goes: the
/// queues switch to the new table between chains, and a chain taken before keeps the table it
/// was taken with until it is answered.
public final class GuestMemory: @unchecked Sendable {
    public struct Mapped: @unchecked Sendable {
        public let region: MemoryRegion
        /// Ferry's address of the region's first byte.
        public let host: UnsafeMutableRawPointer
        /// The mmap the region lies in, kept mapped as long as this table is alive.
        public let mapping: RegionMapping?
        public init(region: MemoryRegion, host: UnsafeMutableRawPointer, mapping: RegionMapping? = nil) {
            self.region = region; self.host = host; self.mapping = mapping
        }
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
