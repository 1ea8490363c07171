import FerrySystem

/// The reference engine: each operation runs at `submit` with the plain syscall on the calling
/// thread, and its completion waits in a small queue until `reap`. Used where io_uring is not
/// available, and by tests as the result every engine must give.
public final class SyncIOEngine: IOEngine {
    public var kind: IOEngineKind { .sync }
    public let depth: Int
    public var inFlight: Int { ready.count }
    public var completionFD: Int32? { nil }
    private var ready: [IOCompletion] = []

    public init(depth: Int) {
        self.depth = depth
        ready.reserveCapacity(depth)
    }

    public func submit(_ operation: IOOperation, slot: Int) {
        precondition(ready.count < depth, "more operations in flight than slots")
        ready.append(IOCompletion(slot: slot, result: SyncIOEngine.run(operation)))
    }

    public func flush() {}

    public func prepareToSleep() -> Bool { ready.isEmpty }

    @discardableResult
    public func reap(wait: Bool, _ body: (IOCompletion) -> Void) -> Int {
        let count = ready.count
        for completion in ready { body(completion) }
        ready.removeAll(keepingCapacity: true)
        return count
    }

    public func sleep(untilCompletionOrSignal eventFDs: [Int32]) -> [Int32] {
        guard ready.isEmpty else { return [] }
        let readable = Host.waitReadable(eventFDs, timeoutMilliseconds: -1)
        let signalled = zip(eventFDs, readable).filter { $0.1 }.map { $0.0 }
        for fd in signalled { EventCounter.drain(fd) }
        return signalled
    }

    /// Runs `operation` with the plain syscall; returns its result or -errno.
    static func run(_ operation: IOOperation) -> Int32 {
        do throws(Errno) {
            switch operation {
            case let .read(fd, offset, buffer):
                return Int32(try Host.pread(fd, into: buffer, offset: offset))
            case let .write(fd, offset, data, _):
                return Int32(try Host.pwrite(fd, data, offset: offset))
            case let .readv(fd, offset, vectors):
                return Int32(try Host.preadv(fd, vectors.base, count: vectors.count, offset: offset))
            case let .writev(fd, offset, vectors, _):
                return Int32(try writeAll(fd, vectors, offset: offset))
            case let .fsync(fd, dataOnly):
                try Host.fsync(fd, dataOnly: dataOnly)
            case let .fallocate(fd, mode, offset, length):
                try Host.fallocate(fd, mode: mode, offset: offset, length: length)
            }
            return 0
        } catch {
            return -error.rawValue
        }
    }

    /// pwritev(2) of everything `vectors` names, continuing short writes; the bytes written.
    private static func writeAll(_ fd: Int32, _ vectors: IOVectors, offset: Int64) throws(Errno) -> Int {
        let total = vectors.totalLength
        var done = 0, rest = vectors
        while done < total {
            let n = try Host.pwritev(fd, rest.base, count: rest.count, offset: offset + Int64(done))
            if n == 0 { break }
            done += n
            if done < total { rest = rest.dropping(n) }
        }
        return done
    }
}
