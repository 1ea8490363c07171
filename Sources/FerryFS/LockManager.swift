import FerrySystem
import Glibc
import Logging
import Synchronization

/// POSIX record locks and flock as real host locks (protocol/locks.md).
///
/// Each FUSE lock owner gets its own host open file description per node, and every POSIX lock
/// is an OFD lock on it, so the host kernel decides conflicts with every other holder: other
/// owners here, other Ferry mounts, host processes. flock goes to the open file's own
/// descriptor. Blocking waits run in waiter threads, never on request threads; `waiters`
/// bounds how many at once (past it a blocking request is answered ENOLCK at once).
public final class LockManager: Sendable {
    /// Where a lock request ended.
    public enum Outcome: Sendable {
        /// Answered now (nil: success).
        case done(Errno?)
        /// A waiter thread took over; it calls the completion exactly once.
        case waiting
    }

    /// A FUSE lock owner on a node.
    struct OwnerKey: Hashable {
        let nodeID: UInt64
        let owner: UInt64
    }

    /// Locks granted through this server, per node and owner (for deadlock detection and
    /// F_GETLK pids only; the host holds the real state).
    struct ShadowLocks {
        var pid: UInt32
        var ranges: [LockRange]
    }

    /// One blocked SETLKW.
    final class Waiter: Sendable {
        let cancelled = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        /// Kernel id of the waiting thread (0 until it has started).
        let threadID = Atomic<Int32>(0)
    }

    struct State {
        var descriptors: [OwnerKey: OwnedFD] = [:]
        var ownersByHandle: [UInt64: Set<OwnerKey>] = [:]            // fh → owners that locked through it
        var shadow: [UInt64: [UInt64: ShadowLocks]] = [:]          // node → owner → locks
        var waiting: [UInt64: (nodeID: UInt64, lock: LockRange)] = [:]   // owner → what it waits for
        var waiters: [UInt64: Waiter] = [:]                          // request unique → waiter
        var earlyInterrupts: [UInt64: timespec] = [:]                // INTERRUPTs before their SETLKW
    }

    private let state = Mutex(State())
    private let logger: Logger
    /// The bound on blocked requests waiting at once (`ResourceLimits.maxLockWaiters`): each
    /// is a thread.
    public let waiters: ResourceBound
    /// The most INTERRUPTs remembered for requests not seen yet.
    static let earlyInterruptCap = 4096
    /// Stack size of a waiter thread: it only sits in one syscall.
    static let waiterStack = 64 * 1024

    public init(logger: Logger, waiters: ResourceBound) {
        self.logger = logger
        self.waiters = waiters
        WakeSignal.install(WakeSignal.lockWaiter)
    }

    // MARK: GETLK

    /// F_GETLK: the first lock that would conflict with `lock` for `owner`, or type F_UNLCK.
    public func getlk(nodeID: UInt64, owner: UInt64, file: OpenFileTable.OpenFile, type: FileType?,
                      lock: LockRange, credentials: ThreadCredentials) throws(Errno) -> (LockRange, pid: UInt32) {
        let key = OwnerKey(nodeID: nodeID, owner: owner)
        let known = state.withLock { $0.descriptors[key] }
        let fd: OwnedFD
        if let known { fd = known } else { fd = try openOwnerDescriptor(file, type: type, credentials) }
        let found = try Host.ofdLock(fd.rawValue, .get, lock.host)
        let conflict = LockRange(found)
        guard found.type != HostLock.unlock else { return (conflict, 0) }
        if found.pid > 0 { return (conflict, UInt32(found.pid)) }     // a classic host lock
        if found.pid == 0 {   // a classic lock of a process outside Ferry's pid namespace
            return (conflict, ProcLocks.holder(of: found, onFileOpenAs: fd.rawValue) ?? 0)
        }
        let pid: UInt32 = state.withLock { s in
            for (other, locks) in s.shadow[nodeID] ?? [:] where other != owner {
                if locks.ranges.contains(where: { $0.conflicts(with: lock) }) { return locks.pid }
            }
            return 0
        }
        return (conflict, pid)
    }

    // MARK: SETLK / SETLKW

    /// F_SETLK / F_SETLKW for a POSIX lock of `owner` (pid `pid`). Blocking requests that
    /// conflict continue in a waiter thread that calls `completion`.
    public func setlk(nodeID: UInt64, owner: UInt64, pid: UInt32, file: OpenFileTable.OpenFile, type: FileType?,
                      lock: LockRange, blocking: Bool, unique: UInt64, credentials: ThreadCredentials,
                      completion: @escaping @Sendable (Errno?) -> Void) -> Outcome {
        let key = OwnerKey(nodeID: nodeID, owner: owner)
        let fd: OwnedFD
        do { fd = try ownerDescriptor(key, fh: UInt64(file.fd.rawValue), file: file, type: type, credentials: credentials) }
        catch { return .done(error) }
        do {
            _ = try Host.ofdLock(fd.rawValue, .set, lock.host)
            record(key, pid: pid, lock: lock)
            return .done(nil)
        } catch {
            guard error.rawValue == EAGAIN || error.rawValue == EACCES else { return .done(error) }
            guard blocking else { return .done(Errno(rawValue: EAGAIN)) }
        }
        return wait(unique: unique, owner: owner, nodeID: nodeID, lock: lock, completion: completion) { () throws(Errno) in
            _ = try Host.ofdLock(fd.rawValue, .setWait, lock.host)
            self.record(key, pid: pid, lock: lock)
        }
    }

    /// flock for the open file `file`: `type` F_RDLCK/F_WRLCK/F_UNLCK.
    public func flock(file: OpenFileTable.OpenFile, type: UInt32, blocking: Bool, unique: UInt64, owner: UInt64,
                      nodeID: UInt64, completion: @escaping @Sendable (Errno?) -> Void) -> Outcome {
        let operation: Host.FlockOperation
        switch Int16(truncatingIfNeeded: type) {
        case HostLock.read: operation = .shared
        case HostLock.write: operation = .exclusive
        case HostLock.unlock: operation = .unlock
        default: return .done(Errno.invalid)
        }
        do {
            try Host.flock(file.fd.rawValue, operation, wait: false)
            return .done(nil)
        } catch {
            guard error.rawValue == EWOULDBLOCK else { return .done(error) }
            guard blocking else { return .done(Errno(rawValue: EAGAIN)) }
        }
        return wait(unique: unique, owner: nil, nodeID: nodeID, lock: nil, completion: completion) { () throws(Errno) in
            try withExtendedLifetime(file) { () throws(Errno) in try Host.flock(file.fd.rawValue, operation, wait: true) }
        }
    }

    /// Runs `attempt` (a blocking lock call) in a waiter thread until it succeeds, fails, or the
    /// request is interrupted; refuses with EDEADLK when waiting would close a cycle.
    private func wait(unique: UInt64, owner: UInt64?, nodeID: UInt64, lock: LockRange?,
                      completion: @escaping @Sendable (Errno?) -> Void,
                      attempt: @escaping @Sendable () throws(Errno) -> Void) -> Outcome {
        do throws(Errno) { try waiters.acquire() } catch { return .done(error) }
        let waiter = Waiter()
        let refusal: Errno? = state.withLock { s in
            if s.earlyInterrupts.removeValue(forKey: unique) != nil { return Errno.interrupted }
            if let owner, let lock {
                if LockManager.wouldDeadlock(s, owner: owner, nodeID: nodeID, lock: lock) { return Errno(rawValue: EDEADLK) }
                s.waiting[owner] = (nodeID, lock)
            }
            s.waiters[unique] = waiter
            return nil
        }
        if let refusal {
            waiters.release()
            return .done(refusal)
        }
        let finish: @Sendable (Errno?) -> Void = { [self] result in
            state.withLock { s in
                s.waiters[unique] = nil
                if let owner { s.waiting[owner] = nil }
            }
            waiters.release()
            waiter.finished.store(true, ordering: .releasing)
            completion(result)
        }
        do {
            let thread = try HostThread.spawn(name: "ferry-lockwait", stackSize: LockManager.waiterStack) {
                waiter.threadID.store(HostThread.currentID, ordering: .releasing)
                while true {
                    if waiter.cancelled.load(ordering: .acquiring) { return finish(Errno.interrupted) }
                    do throws(Errno) {
                        try attempt()
                        return finish(nil)
                    } catch {
                        if error.rawValue != EINTR { return finish(error) }
                    }
                }
            }
            thread.detach()
        } catch {
            logger.error("cannot start a lock waiter thread: \(error); answering ENOLCK")
            state.withLock { s in
                s.waiters[unique] = nil
                if let owner { s.waiting[owner] = nil }
            }
            waiters.release()
            return .done(Errno(rawValue: ENOLCK))
        }
        return .waiting
    }

    // MARK: INTERRUPT, FLUSH, RELEASE

    /// FUSE_INTERRUPT for request `unique`: a waiting SETLKW stops waiting and is answered EINTR.
    /// Returns whether a waiter was found. An interrupt for a request not yet waiting is kept,
    /// so a SETLKW arriving after it is refused at once.
    @discardableResult
    public func interrupt(unique: UInt64) -> Bool {
        let waiter: Waiter? = state.withLock { s in
            if let waiter = s.waiters[unique] { return waiter }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if s.earlyInterrupts.count >= LockManager.earlyInterruptCap {
                s.earlyInterrupts = s.earlyInterrupts.filter { now.tv_sec - $0.value.tv_sec < 30 }
                // A client sending INTERRUPTs for requests that never come (a raw vhost-user
                // guest) must not grow this without bound: keep an arbitrary half, so pruning
                // stays rare and each INTERRUPT cheap.
                if s.earlyInterrupts.count >= LockManager.earlyInterruptCap / 2 {
                    s.earlyInterrupts = Dictionary(uniqueKeysWithValues: s.earlyInterrupts
                        .prefix(LockManager.earlyInterruptCap / 2).map { ($0.key, $0.value) })
                }
            }
            s.earlyInterrupts[unique] = now
            return nil
        }
        guard let waiter else { return false }
        waiter.cancelled.store(true, ordering: .releasing)
        // The waiter may be between its check and the syscall: signal until it has finished.
        for _ in 0..<5000 where !waiter.finished.load(ordering: .acquiring) {
            let tid = waiter.threadID.load(ordering: .acquiring)
            if tid != 0 { HostThread.signal(threadID: tid, WakeSignal.lockWaiter) }
            usleep(1000)
        }
        return true
    }

    /// FLUSH with `owner`: a close(2) in the client drops all of that owner's POSIX locks on the
    /// file (closing the owner's host descriptor makes the host drop them).
    public func flush(nodeID: UInt64, owner: UInt64) {
        let key = OwnerKey(nodeID: nodeID, owner: owner)
        let dropped: OwnedFD? = state.withLock { s in
            s.shadow[nodeID]?[owner] = nil
            if s.shadow[nodeID]?.isEmpty == true { s.shadow[nodeID] = nil }
            return s.descriptors.removeValue(forKey: key)
        }
        _ = dropped   // closed here, outside the lock, unless a waiter still holds it
    }

    /// RELEASE of `fh` (the client's last close of an open file): drops the locks of every owner
    /// that locked through it. That ends the client's own OFD locks, whose owner is the open file
    /// itself and which no FLUSH names; a process's classic locks were already dropped by the
    /// FLUSH of that close.
    public func release(fh: UInt64) {
        let dropped: [OwnedFD] = state.withLock { s in
            guard let owners = s.ownersByHandle.removeValue(forKey: fh) else { return [] }
            return owners.compactMap { key in
                s.shadow[key.nodeID]?[key.owner] = nil
                if s.shadow[key.nodeID]?.isEmpty == true { s.shadow[key.nodeID] = nil }
                return s.descriptors.removeValue(forKey: key)
            }
        }
        _ = dropped   // closed outside the lock
    }

    /// Number of (node, owner) host descriptors, of waiting requests, and of INTERRUPTs kept
    /// for requests not seen yet (for stats and tests).
    public var counts: (descriptors: Int, waiters: Int, earlyInterrupts: Int) {
        state.withLock { ($0.descriptors.count, $0.waiters.count, $0.earlyInterrupts.count) }
    }

    // MARK: Helpers

    private func ownerDescriptor(_ key: OwnerKey, fh: UInt64, file: OpenFileTable.OpenFile, type: FileType?,
                                 credentials: ThreadCredentials) throws(Errno) -> OwnedFD {
        if let known = state.withLock({ $0.descriptors[key] }) { return known }
        let opened = try openOwnerDescriptor(file, type: type, credentials)
        return state.withLock { s in
            if let known = s.descriptors[key] { return known }
            s.descriptors[key] = opened
            s.ownersByHandle[fh, default: []].insert(key)
            return opened
        }
    }

    /// A new open file description of the file behind `file`, read-write where the host allows
    /// (any lock type can then be taken), opened with Ferry's own rights: the client already
    /// holds the file open, and the kernel checked the lock type against its open mode.
    private func openOwnerDescriptor(_ file: OpenFileTable.OpenFile, type: FileType?,
                                     _ credentials: ThreadCredentials) throws(Errno) -> OwnedFD {
        try credentials.asRoot { () throws(Errno) -> OwnedFD in
            switch type {
            case .directory?:
                return OwnedFD(try Host.reopen(file.fd.rawValue, flags: HostFlags.oRdOnly | HostFlags.oDirectory))
            case .regular?:
                do { return OwnedFD(try Host.reopen(file.fd.rawValue, flags: HostFlags.oRdWr)) }
                catch { return OwnedFD(try Host.reopen(file.fd.rawValue, flags: HostFlags.oRdOnly)) }
            case .fifo?:
                return OwnedFD(try Host.reopen(file.fd.rawValue, flags: HostFlags.oRdOnly | O_NONBLOCK))
            default:
                throw Errno(rawValue: ENOLCK)   // devices and sockets: reopening would touch the device
            }
        }
    }

    private func record(_ key: OwnerKey, pid: UInt32, lock: LockRange) {
        state.withLock { s in
            var locks = s.shadow[key.nodeID]?[key.owner] ?? ShadowLocks(pid: pid, ranges: [])
            locks.ranges = locks.ranges.flatMap { $0.subtracting(lock) }
            if lock.type != UInt32(HostLock.unlock) {
                locks.ranges.append(lock)
                locks.pid = pid
            }
            s.shadow[key.nodeID, default: [:]][key.owner] = locks.ranges.isEmpty ? nil : locks
            if s.shadow[key.nodeID]?.isEmpty == true { s.shadow[key.nodeID] = nil }
        }
    }

    /// Whether `owner` waiting for `lock` on `nodeID` would close a cycle of owners waiting for
    /// each other through locks granted by this server.
    static func wouldDeadlock(_ s: State, owner: UInt64, nodeID: UInt64, lock: LockRange) -> Bool {
        func blockers(of who: UInt64, node: UInt64, lock: LockRange) -> [UInt64] {
            (s.shadow[node] ?? [:]).compactMap { other, locks in
                other != who && locks.ranges.contains { $0.conflicts(with: lock) } ? other : nil
            }
        }
        var frontier = blockers(of: owner, node: nodeID, lock: lock)
        var visited = Set<UInt64>()
        while let next = frontier.popLast() {
            if next == owner { return true }
            guard visited.insert(next).inserted, let waits = s.waiting[next] else { continue }
            frontier += blockers(of: next, node: waits.nodeID, lock: waits.lock)
        }
        return false
    }
}
