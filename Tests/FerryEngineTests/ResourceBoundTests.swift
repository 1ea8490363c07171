import FerryFS
import FerrySystem
import Foundation
import Glibc
import Logging
import Synchronization
import XCTest

/// The per-connection bounds (`ResourceLimits`) on a PassthroughFS over a scratch directory:
/// each refuses past its limit with its errno, gives back what is released, and the xattr
/// checks refuse oversized requests without allocating what the client asks for.
final class ResourceBoundTests: XCTestCase {
    var source = ""
    let ctx = ThreadCredentials(switching: false)

    override func setUpWithError() throws {
        var bytes = Array("/var/tmp/ferry-bounds.XXXXXX".utf8CString)
        XCTAssertNotNil(mkdtemp(&bytes))
        source = String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        for i in 0..<10 { XCTAssertTrue(FileManager.default.createFile(atPath: "\(source)/f\(i)", contents: Data("x".utf8))) }
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: source)
    }

    private func filesystem(inodes: Int = 100, openFiles: Int = 100, lockWaiters: Int = 100) throws -> PassthroughFS {
        var options = FSOptions()
        options.limits = ResourceLimits(maxInodes: inodes, maxOpenFiles: openFiles, maxLockWaiters: lockWaiters)
        return try PassthroughFS(source: source, options: options, logger: Logger(label: "test"))
    }

    private func errno(_ body: () throws(Errno) -> Void) -> Int32 {
        do throws(Errno) { try body(); return 0 } catch { return error.rawValue }
    }

    private func setxattr(_ fs: PassthroughFS, _ node: UInt64, name: [UInt8], value: [UInt8]) -> Int32 {
        value.withUnsafeBytes { raw in
            errno { () throws(Errno) in try fs.setxattr(ctx, nodeID: node, name: name, value: raw, flags: 0) }
        }
    }

    func testBoundRefusesPastItsLimitAndCountsRefusals() throws {
        let bound = ResourceBound(name: "things", limit: 2, refusal: Errno(rawValue: ENFILE), option: "--max-things",
                                  logger: Logger(label: "test"))
        XCTAssertEqual(errno { () throws(Errno) in try bound.acquire() }, 0)
        XCTAssertEqual(errno { () throws(Errno) in try bound.acquire() }, 0)
        XCTAssertEqual(errno { () throws(Errno) in try bound.acquire() }, ENFILE)
        XCTAssertEqual(errno { () throws(Errno) in try bound.acquire() }, ENFILE)
        XCTAssertEqual(bound.count, 2)
        XCTAssertEqual(bound.refused, 2)
        bound.release()
        XCTAssertEqual(errno { () throws(Errno) in try bound.acquire() }, 0)
    }

    func testRateLimitedWarningLogsOncePerInterval() {
        let warning = RateLimitedWarning(logger: Logger(label: "test"), intervalSeconds: 60)
        let lines = Mutex<[Int]>([])
        for _ in 0..<100 { warning.warn { suppressed in lines.withLock { $0.append(suppressed) }; return "x" } }
        XCTAssertEqual(lines.withLock { $0 }, [0], "the message is built only for lines logged")
    }

    func testDefaultsLeaveDescriptorHeadroom() {
        let handles = ResourceLimits.defaults(descriptorLimit: 1 << 20, inodesUseDescriptors: false)
        XCTAssertEqual(handles.maxInodes, ResourceLimits.defaultMaxInodes)
        XCTAssertLessThanOrEqual(handles.descriptorsNeeded(inodesUseDescriptors: false), 1 << 20)
        let descriptors = ResourceLimits.defaults(descriptorLimit: 1 << 20, inodesUseDescriptors: true)
        XCTAssertLessThanOrEqual(descriptors.descriptorsNeeded(inodesUseDescriptors: true), 1 << 20)
        let small = ResourceLimits.defaults(descriptorLimit: 1024, inodesUseDescriptors: false)
        XCTAssertGreaterThanOrEqual(small.maxOpenFiles, 16)
        XCTAssertEqual(small.maxLockWaiters, ResourceLimits.defaultMaxLockWaiters)
    }

    /// Five inodes: the sixth name is ENOMEM, a name already held is still found, and a FORGET
    /// makes room again; creating a file at the bound is refused before it exists on the host.
    func testInodeBound() throws {
        let fs = try filesystem(inodes: 5)
        var held: [UInt64] = []
        for i in 0..<5 { held.append(try fs.lookup(ctx, parent: 1, name: Array("f\(i)".utf8)).nodeID) }
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.lookup(ctx, parent: 1, name: Array("f5".utf8)) }, ENOMEM)
        XCTAssertEqual(try fs.lookup(ctx, parent: 1, name: Array("f0".utf8)).nodeID, held[0])
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.create(ctx, parent: 1, name: Array("new".utf8), flags: UInt32(O_RDWR), mode: 0o644, umask: 0) }, ENOMEM)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(source)/new"))
        fs.forget(held[1], count: 1)
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.lookup(ctx, parent: 1, name: Array("f5".utf8)) }, 0)
        XCTAssertEqual(fs.inodes.bound?.count, 5)
        // A create that is let through takes the place it reserved. At the bound a create is
        // refused before it looks (the kernel sends CREATE only for names it found missing);
        // below it, one of a file already held (no O_EXCL) gives its place back. A failed mkdir
        // leaves the count as it was.
        fs.forget(held[2], count: 1)
        let (created, fh) = try fs.create(ctx, parent: 1, name: Array("new".utf8), flags: UInt32(O_RDWR), mode: 0o644, umask: 0)
        XCTAssertEqual(fs.inodes.bound?.count, 5)
        try fs.release(fh: fh)
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.create(ctx, parent: 1, name: Array("new".utf8), flags: UInt32(O_RDWR), mode: 0o644, umask: 0) }, ENOMEM)
        fs.forget(held[3], count: 1)
        let (again, fh2) = try fs.create(ctx, parent: 1, name: Array("new".utf8), flags: UInt32(O_RDWR), mode: 0o644, umask: 0)
        XCTAssertEqual(again.nodeID, created.nodeID)
        try fs.release(fh: fh2)
        XCTAssertEqual(fs.inodes.bound?.count, 4)
        fs.forget(created.nodeID, count: 2)
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.mkdir(ctx, parent: 1, name: Array("f0".utf8), mode: 0o755, umask: 0) }, EEXIST)
        XCTAssertEqual(fs.inodes.bound?.count, 3)
    }

    /// Three open files: the fourth open is ENFILE, a release makes room, a failed open takes none.
    func testOpenFileBound() throws {
        let fs = try filesystem(openFiles: 3)
        let node = try fs.lookup(ctx, parent: 1, name: Array("f0".utf8)).nodeID
        var handles: [UInt64] = []
        for _ in 0..<3 { handles.append(try fs.open(ctx, nodeID: node, flags: UInt32(O_RDONLY))) }
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.open(ctx, nodeID: node, flags: UInt32(O_RDONLY)) }, ENFILE)
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.opendir(ctx, nodeID: 1) }, ENFILE)
        try fs.release(fh: handles.removeLast())
        XCTAssertEqual(errno { () throws(Errno) in _ = try fs.opendir(ctx, nodeID: node) }, ENOTDIR)   // refused by the host: no slot kept
        XCTAssertEqual(errno { () throws(Errno) in handles.append(try fs.opendir(ctx, nodeID: 1)) }, 0)
        XCTAssertEqual(fs.openFiles.bound?.count, 3)
    }

    /// One lock waiter: a second blocking flock behind a host holder is ENOLCK at once, and the
    /// first is granted when the holder lets go.
    func testLockWaiterBound() throws {
        let fs = try filesystem(lockWaiters: 1)
        let holder = open("\(source)/f0", O_RDWR)
        defer { close(holder) }
        try Host.flock(holder, .exclusive, wait: false)
        let node = try fs.lookup(ctx, parent: 1, name: Array("f0".utf8)).nodeID
        let first = try fs.open(ctx, nodeID: node, flags: UInt32(O_RDWR))
        let second = try fs.open(ctx, nodeID: node, flags: UInt32(O_RDWR))
        let granted = expectation(description: "first waiter granted")
        let lock = LockRange(start: 0, end: LockRange.toEnd, type: UInt32(F_WRLCK))
        let outcome = fs.setlk(ctx, nodeID: node, fh: first, owner: 1, pid: 1, lock: lock, flock: true, blocking: true,
                               unique: 100) { error in
            XCTAssertNil(error)
            granted.fulfill()
        }
        guard case .waiting = outcome else { return XCTFail("the first blocking flock should wait: \(outcome)") }
        let refused = fs.setlk(ctx, nodeID: node, fh: second, owner: 2, pid: 2, lock: lock, flock: true, blocking: true,
                               unique: 101) { _ in XCTFail("a refused request must not complete later") }
        guard case let .done(error?) = refused else { return XCTFail("the second should be refused: \(refused)") }
        XCTAssertEqual(error.rawValue, ENOLCK)
        try Host.flock(holder, .unlock, wait: false)
        wait(for: [granted], timeout: 10)
        for _ in 0..<100 where fs.locks.waiters.count != 0 { usleep(10_000) }
        XCTAssertEqual(fs.locks.waiters.count, 0)
        try fs.release(fh: first)
        try fs.release(fh: second)
    }

    /// INTERRUPTs for requests that never arrive (a raw client could send any number) are kept
    /// up to a cap, not without bound.
    func testEarlyInterruptsAreCapped() throws {
        let fs = try filesystem()
        for unique in UInt64(1)...20_000 { XCTAssertFalse(fs.locks.interrupt(unique: unique)) }
        XCTAssertLessThanOrEqual(fs.locks.counts.earlyInterrupts, 4096)
    }

    /// SETXATTR over XATTR_SIZE_MAX is E2BIG and a name over XATTR_NAME_MAX ERANGE; a GETXATTR
    /// or LISTXATTR asking for 4 GiB of room is answered from a 64 KiB buffer.
    func testXattrSizes() throws {
        let fs = try filesystem()
        let node = try fs.lookup(ctx, parent: 1, name: Array("f0".utf8)).nodeID
        let big = [UInt8](repeating: 1, count: ResourceLimits.xattrValueMax + 1)
        XCTAssertEqual(setxattr(fs, node, name: Array("user.big".utf8), value: big), E2BIG)
        let longName = Array("user.".utf8) + [UInt8](repeating: 0x61, count: 300)
        XCTAssertEqual(setxattr(fs, node, name: longName, value: [1]), ERANGE)
        let value = Array("v".utf8)
        let stored = setxattr(fs, node, name: Array("user.v".utf8), value: value)
        if stored == EOPNOTSUPP { throw XCTSkip("\(source) has no user xattrs") }
        XCTAssertEqual(stored, 0)
        XCTAssertEqual(try fs.getxattr(ctx, nodeID: node, name: Array("user.v".utf8), size: UInt32.max).value, value)
        XCTAssertTrue(try fs.listxattr(ctx, nodeID: node, size: UInt32.max).names.count < ResourceLimits.xattrListMax)
    }
}
