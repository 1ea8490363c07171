import Glibc

/// The buffers of one vectored operation (`IOOperation.readv` / `.writev`): a run of `iovec`s
/// in memory the caller owns (an `IOVectorList`), naming memory that must stay valid until the
/// operation completes. The engine may rewrite the entries while the operation is in flight (a
/// short write continues from where it stopped), so one operation uses them at a time.
public struct IOVectors: @unchecked Sendable {
    /// The first entry, and how many there are.
    let base: UnsafeMutablePointer<iovec>
    public let count: Int

    init(base: UnsafeMutablePointer<iovec>, count: Int) {
        self.base = base
        self.count = count
    }

    /// The bytes all entries name together.
    public var totalLength: Int {
        var total = 0
        for i in 0..<count { total += base[i].iov_len }
        return total
    }

    /// The same buffers without their first `bytes` bytes (fewer than `totalLength`): whole
    /// entries are skipped, and the first one left is shortened in place.
    func dropping(_ bytes: Int) -> IOVectors {
        var left = bytes, first = 0
        while first < count, left >= base[first].iov_len {
            left -= base[first].iov_len
            first += 1
        }
        if first < count, left > 0 {
            base[first].iov_base = base[first].iov_base.map { $0 + left }
            base[first].iov_len -= left
        }
        return IOVectors(base: base + first, count: count - first)
    }

    /// Whether every entry starts and ends on a multiple of `alignment` (a power of two), as an
    /// O_DIRECT descriptor needs.
    public func isAligned(to alignment: Int) -> Bool {
        let mask = alignment - 1
        for i in 0..<count {
            let address = Int(bitPattern: base[i].iov_base)
            if address & mask != 0 || base[i].iov_len & mask != 0 { return false }
        }
        return true
    }

    /// Calls `body` with each entry's memory in order.
    public func forEach(_ body: (UnsafeMutableRawBufferPointer) -> Void) {
        for i in 0..<count { body(UnsafeMutableRawBufferPointer(start: base[i].iov_base, count: base[i].iov_len)) }
    }

    /// Copies the bytes these buffers name into `destination`, in order, as far as it reaches;
    /// returns how many.
    @discardableResult
    public func copy(into destination: UnsafeMutableRawBufferPointer) -> Int {
        pairUp(count: destination.count) { segment, range in
            UnsafeMutableRawBufferPointer(rebasing: destination[range]).copyMemory(from: UnsafeRawBufferPointer(segment))
        }
    }

    /// Copies `source` into these buffers, in order, as far as they reach; returns how many.
    @discardableResult
    public func copy(from source: UnsafeRawBufferPointer) -> Int {
        pairUp(count: source.count) { segment, range in
            segment.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[range]))
        }
    }

    /// Walks the entries against a flat buffer of `count` bytes: `body` gets each entry's piece
    /// (cut to what is left) and the flat range it pairs with. Returns the bytes paired.
    private func pairUp(count: Int, _ body: (UnsafeMutableRawBufferPointer, Range<Int>) -> Void) -> Int {
        var at = 0
        forEach { segment in
            let n = min(segment.count, count - at)
            guard n > 0 else { return }
            body(UnsafeMutableRawBufferPointer(rebasing: segment[0..<n]), at..<(at + n))
            at += n
        }
        return at
    }
}

/// An owned, growable array of `iovec` entries, reused from one operation to the next (one per
/// I/O slot): `removeAll`, `append` the buffers, then hand `vectors` to an operation and leave
/// the list alone until it completes. Allocates only when it grows.
public final class IOVectorList {
    private var storage: UnsafeMutablePointer<iovec>
    private var capacity: Int
    /// Entries appended since the last `removeAll`.
    public private(set) var count = 0
    /// Bytes they name together.
    public private(set) var totalLength = 0

    public init(capacity: Int = 16) {
        self.capacity = max(1, capacity)
        storage = .allocate(capacity: self.capacity)
    }

    deinit { storage.deallocate() }

    public func removeAll() {
        count = 0
        totalLength = 0
    }

    /// Adds `buffer` as the next entry (empty buffers are left out).
    public func append(_ buffer: UnsafeMutableRawBufferPointer) {
        guard buffer.count > 0 else { return }
        if count == capacity {
            let bigger = UnsafeMutablePointer<iovec>.allocate(capacity: capacity * 2)
            bigger.moveInitialize(from: storage, count: count)
            storage.deallocate()
            storage = bigger
            capacity *= 2
        }
        (storage + count).initialize(to: iovec(iov_base: buffer.baseAddress, iov_len: buffer.count))
        count += 1
        totalLength += buffer.count
    }

    /// Shortens the entries to name at most `length` bytes (later entries are dropped, the
    /// last one kept is cut).
    public func truncate(to length: Int) {
        guard totalLength > length else { return }
        var left = max(0, length), kept = 0
        while kept < count, left > 0 {
            let n = min(storage[kept].iov_len, left)
            storage[kept].iov_len = n
            left -= n
            kept += 1
        }
        count = kept
        totalLength = max(0, length)
    }

    /// The entries as an operation takes them.
    public var vectors: IOVectors { IOVectors(base: storage, count: count) }
}
