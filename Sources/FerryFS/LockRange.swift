import FerrySystem

/// A byte range lock in FUSE terms: inclusive [start, end], end = `LockRange.toEnd` for "to the
/// end of the file", and a type (F_RDLCK 0, F_WRLCK 1, F_UNLCK 2).
public struct LockRange: Sendable, Equatable {
    public var start: UInt64
    public var end: UInt64
    public var type: UInt32

    /// FUSE's OFFSET_MAX.
    public static let toEnd = UInt64(Int64.max)

    public init(start: UInt64, end: UInt64, type: UInt32) {
        self.start = start; self.end = end; self.type = type
    }

    /// The host's `struct flock` form (length 0 = to the end of the file).
    var host: HostLock {
        let start = Int64(clamping: start)
        let length: Int64 = end >= LockRange.toEnd ? 0 : Int64(clamping: end) - start + 1
        return HostLock(type: Int16(truncatingIfNeeded: type), start: start, length: length)
    }

    /// From the host's `struct flock` form.
    init(_ lock: HostLock) {
        start = UInt64(max(0, lock.start))
        end = lock.length == 0 ? LockRange.toEnd : UInt64(max(0, lock.start + lock.length - 1))
        type = UInt32(lock.type)
    }

    func overlaps(_ other: LockRange) -> Bool { start <= other.end && other.start <= end }

    /// Whether two locks of different owners conflict (they overlap and one writes).
    func conflicts(with other: LockRange) -> Bool {
        overlaps(other) && (type == UInt32(HostLock.write) || other.type == UInt32(HostLock.write))
    }

    /// What is left of `self` after removing `other`'s range (0, 1 or 2 pieces).
    func subtracting(_ other: LockRange) -> [LockRange] {
        guard overlaps(other) else { return [self] }
        var pieces: [LockRange] = []
        if start < other.start { pieces.append(LockRange(start: start, end: other.start - 1, type: type)) }
        if end > other.end { pieces.append(LockRange(start: other.end + 1, end: end, type: type)) }
        return pieces
    }
}
