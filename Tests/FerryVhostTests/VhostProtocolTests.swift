import CFerryVhost
import FerryEngine
import FerryFS
import FerryProtocol
import FerrySystem
import FerryVhost
import Glibc
import Logging
import Synchronization
import XCTest

/// Collects log lines, to check that refused input is reported.
final class LogBook: Sendable {
    let lines = Mutex<[String]>([])
    func contains(_ text: String) -> Bool { lines.withLock { $0.contains { $0.contains(text) } } }
    var all: String { lines.withLock { $0.joined(separator: "\n") } }
}

struct BookHandler: LogHandler {
    let book: LogBook
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? { get { nil } set {} }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        book.lines.withLock { $0.append("\(level) \(message)") }
    }
}

/// A front-end that speaks vhost-user to an in-process `VhostUserServer` (with `persist`), sends
/// it malformed messages and hostile queues, and checks that it reports each, drops only that
/// connection (or that chain), and serves the next well-formed one, FUSE_INIT included.
final class VhostProtocolTests: XCTestCase {
    var directory = ""
    var socketPath = ""
    let book = LogBook()
    var server: VhostUserServer!
    var thread: HostThread?
    /// The resource bounds of the next connection's filesystem (read when the guest connects).
    final class Limits: Sendable {
        let value = Mutex(ResourceLimits.unbounded)
    }
    let limits = Limits()

    override func setUpWithError() throws {
        var template = Array("/tmp/ferry-vhost-proto.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw Errno.current }
        directory = String(cString: template)
        mkdir(directory + "/src", 0o755)
        socketPath = directory + "/sock"
        let book = self.book
        let logger = Logger(label: "test") { _ in BookHandler(book: book) }
        let source = directory + "/src"
        let limits = self.limits
        server = VhostUserServer(socketPath: socketPath, persist: true, logger: logger) {
            var options = EngineOptions()
            options.ioEngine = .sync
            options.callerPIDsAreHostPIDs = false
            var fsOptions = FSOptions()
            fsOptions.limits = limits.value.withLock { $0 }
            return FUSEEngine(fs: try PassthroughFS(source: source, options: fsOptions, logger: logger), options: options, logger: logger)
        }
        try server.listen()
        let server = self.server!
        thread = try HostThread.spawn(name: "vhost-test") { try? server.run() }
    }

    override func tearDown() {
        server.stop()
        thread?.join()
        _ = system("rm -rf '\(directory)'")
    }

    // MARK: a minimal front-end

    final class Client {
        let fd: Int32
        init(_ path: String) throws {
            fd = ferry_vhost_connect(path)
            guard fd >= 0 else { throw Errno.current }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }

        func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) {
            _ = bytes.withUnsafeBytes { ferry_vhost_send(fd, $0.baseAddress, $0.count, fds, Int32(fds.count)) }
        }

        func send(_ request: UInt32, _ payload: [UInt8] = [], fds: [Int32] = [], needReply: Bool = false) {
            sendRaw(VhostHeader(request: request, flags: 1 | (needReply ? 8 : 0), size: UInt32(payload.count)).encoded + payload, fds: fds)
        }

        /// The next reply's payload, or nil when the server closed the connection.
        func reply() -> (request: UInt32, payload: [UInt8])? {
            guard let header = read(12) else { return nil }
            let size = Int(header[8]) | Int(header[9]) << 8
            guard let payload = read(size) else { return nil }
            return (UInt32(header[0]), payload)
        }

        private func read(_ n: Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0, count: n)
            var got = 0
            while got < n {
                let r = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, n - got, 0) }
                if r <= 0 { return nil }
                got += r
            }
            return out
        }

        /// Whether the server closed the connection (reads EOF).
        var closedByServer: Bool { read(1) == nil }
    }

    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    static func le64(_ p: [UInt8]) -> UInt64 { p.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }

    func testMalformedMessagesDropOnlyThatConnection() throws {
        let cases: [(String, (Client) -> Void, String)] = [
            ("short header", { $0.sendRaw([1, 0, 0, 0, 1]); shutdown($0.fd, Int32(SHUT_WR)) }, "header of 5 bytes"),
            ("oversized", { $0.sendRaw(VhostHeader(request: 5, flags: 1, size: 1 << 30).encoded) }, "announces a"),
            ("unknown type", { $0.send(999) }, "unknown request type 999"),
            ("bad version", { $0.sendRaw(VhostHeader(request: 1, flags: 2, size: 0).encoded) }, "not protocol version 1"),
            ("missing fd", { $0.send(12, Self.u64(1)) }, "lacks its file descriptor"),
            ("extra fd", { $0.send(1, fds: [0]) }, "unexpected file descriptor"),
            ("truncated payload", { $0.sendRaw(VhostHeader(request: 2, flags: 1, size: 8).encoded + [1, 2]); shutdown($0.fd, Int32(SHUT_WR)) },
             "payload ended"),
            ("queue out of range", { $0.send(8, Self.u32(200) + Self.u32(8)) }, "queue 200"),
            ("bad queue size", { $0.send(8, Self.u32(1) + Self.u32(6)) }, "queue size 6"),
            ("features not offered", { $0.send(2, Self.u64(1 << 63)) }, "were not offered"),
        ]
        for (name, send, logged) in cases {
            let client = try Client(socketPath)
            send(client)
            XCTAssertTrue(client.closedByServer, "\(name): connection not closed")
            XCTAssertTrue(waitFor { self.book.contains(logged) }, "\(name): not logged (\(logged)):\n\(book.all)")
        }
        // The server still answers a well-formed connection.
        let client = try Client(socketPath)
        client.send(1)
        let features = try XCTUnwrap(client.reply())
        XCTAssertEqual(features.request, 1)
        XCTAssertEqual(Self.le64(features.payload), VhostOffer.features)
        client.send(15)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), VhostOffer.protocolFeatures)
        client.send(16, Self.u64(VhostOffer.protocolFeatures), needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0)   // REPLY_ACK: success
        client.send(17)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), UInt64(VhostOffer.maxQueues))
    }

    func waitFor(_ condition: () -> Bool) -> Bool {
        for _ in 0..<200 { if condition() { return true }; usleep(10_000) }
        return condition()
    }

    /// Guest memory: a 2 MiB file mapped here and by the server (as QEMU's memfd is).
    final class FakeRAM {
        static let size = 2 << 20
        static let uva: UInt64 = 0x7f12_0000_0000
        let fd: Int32
        let base: UnsafeMutableRawPointer
        init(_ path: String) throws {
            fd = open(path, O_RDWR | O_CREAT, 0o600)
            guard fd >= 0, ftruncate(fd, off_t(FakeRAM.size)) == 0 else { throw Errno.current }
            guard let p = mmap(nil, FakeRAM.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else { throw Errno.current }
            base = p
        }
        deinit { munmap(base, FakeRAM.size); close(fd) }

        // Queue 1 (requests), 8 entries: descriptors at 0, available at 0x1000, used at 0x2000.
        static let desc: UInt64 = 0, avail: UInt64 = 0x1000, used: UInt64 = 0x2000, qsize = 8
        var availIdx: UInt16 = 0

        func descriptor(_ i: Int, addr: UInt64, len: UInt32, flags: UInt16, next: UInt16 = 0) {
            let p = base + Int(FakeRAM.desc) + 16 * i
            p.storeBytes(of: addr, toByteOffset: 0, as: UInt64.self)
            p.storeBytes(of: len, toByteOffset: 8, as: UInt32.self)
            p.storeBytes(of: flags, toByteOffset: 12, as: UInt16.self)
            p.storeBytes(of: next, toByteOffset: 14, as: UInt16.self)
        }
        func offer(_ head: UInt16) {
            (base + Int(FakeRAM.avail)).storeBytes(of: head, toByteOffset: 4 + 2 * (Int(availIdx) % FakeRAM.qsize), as: UInt16.self)
            availIdx &+= 1
            (base + Int(FakeRAM.avail)).storeBytes(of: availIdx, toByteOffset: 2, as: UInt16.self)
        }
        var usedIdx: UInt16 { (base + Int(FakeRAM.used)).load(fromByteOffset: 2, as: UInt16.self) }
        func used(_ i: Int) -> (id: UInt32, len: UInt32) {
            let p = base + Int(FakeRAM.used) + 4 + 8 * i
            return (p.load(as: UInt32.self), p.load(fromByteOffset: 4, as: UInt32.self))
        }
        func write(_ bytes: [UInt8], at gpa: UInt64) { (base + Int(gpa)).copyMemory(from: bytes, byteCount: bytes.count) }
        func read(_ n: Int, at gpa: UInt64) -> [UInt8] { Array(UnsafeRawBufferPointer(start: base + Int(gpa), count: n)) }
    }

    /// A FUSE_INIT request (7.38) with `unique`.
    static func initRequest(unique: UInt64, lengthField: UInt32? = nil) -> [UInt8] {
        let body = u32(7) + u32(38) + u32(128 << 10) + u32(1 << 1 | 1 << 10) + [UInt8](repeating: 0, count: 48)
        let total = UInt32(40 + body.count)
        return u32(lengthField ?? total) + u32(26) + u64(unique) + u64(0) + u32(0) + u32(0) + u32(1) + u32(0) + body
    }

    /// Connects and starts queue 1 on `ram` like QEMU does.
    func startDevice(_ ram: FakeRAM, kick: EventCounter, call: EventCounter) throws -> Client {
        let client = try Client(socketPath)
        client.send(1); _ = client.reply()
        client.send(15); _ = client.reply()
        client.send(16, Self.u64(VhostOffer.protocolFeatures))
        client.send(3)
        client.send(2, Self.u64(VirtioFeature.version1 | VirtioFeature.protocolFeatures | VirtioFeature.indirectDescriptors))
        let table = Self.u32(1) + Self.u32(0) + Self.u64(0) + Self.u64(UInt64(FakeRAM.size)) + Self.u64(FakeRAM.uva) + Self.u64(0)
        client.send(5, table, fds: [ram.fd], needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0)
        client.send(8, Self.u32(1) + Self.u32(UInt32(FakeRAM.qsize)))
        client.send(10, Self.u32(1) + Self.u32(0))
        client.send(9, Self.u32(1) + Self.u32(0) + Self.u64(FakeRAM.uva + FakeRAM.desc) + Self.u64(FakeRAM.uva + FakeRAM.used)
                    + Self.u64(FakeRAM.uva + FakeRAM.avail) + Self.u64(0))
        client.send(12, Self.u64(1), fds: [kick.fd.rawValue])
        client.send(13, Self.u64(1), fds: [call.fd.rawValue])
        client.send(18, Self.u32(1) + Self.u32(1), needReply: true)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), 0)
        XCTAssertTrue(waitFor { self.book.contains("queue 1 (requests, size 8) started") }, book.all)
        return client
    }

    func testHostileQueuesAndAGoodRequest() throws {
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let client = try startDevice(ram, kick: kick, call: call)

        // 0: a buffer outside guest memory; 1 -> 2 -> 1: a loop; 3: a FUSE header whose length
        // field lies; 5 (+6): a good FUSE_INIT.
        ram.descriptor(0, addr: 1 << 40, len: 64, flags: 0)
        ram.descriptor(1, addr: 0x10000, len: 8, flags: 1, next: 2)
        ram.descriptor(2, addr: 0x10000, len: 8, flags: 1, next: 1)
        ram.write(Self.initRequest(unique: 77, lengthField: 4000), at: 0x11000)
        ram.descriptor(3, addr: 0x11000, len: 104, flags: 1, next: 4)
        ram.descriptor(4, addr: 0x12000, len: 256, flags: 2)
        ram.write(Self.initRequest(unique: 78), at: 0x13000)
        ram.descriptor(5, addr: 0x13000, len: 104, flags: 1, next: 6)
        ram.descriptor(6, addr: 0x14000, len: 256, flags: 2)
        for head: UInt16 in [0, 1, 3, 5] { ram.offer(head) }
        kick.signal()
        XCTAssertTrue(waitFor { ram.usedIdx == 4 }, "used index \(ram.usedIdx):\n\(book.all)")
        XCTAssertEqual(Host.waitReadable([call.fd.rawValue], timeoutMilliseconds: 5000), [true])
        XCTAssertEqual(ram.used(0).id, 0); XCTAssertEqual(ram.used(0).len, 0)
        XCTAssertEqual(ram.used(1).id, 1); XCTAssertEqual(ram.used(1).len, 0)
        XCTAssertEqual(ram.used(2).id, 3); XCTAssertEqual(ram.used(2).len, 16)
        let eio = ram.read(16, at: 0x12000)
        XCTAssertEqual(eio.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, -EIO)
        XCTAssertEqual(eio.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }, 77)
        XCTAssertEqual(ram.used(3).id, 5)
        let initReply = ram.read(24, at: 0x14000)
        XCTAssertEqual(UInt32(ram.used(3).len), initReply.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
        XCTAssertEqual(initReply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, 0)
        XCTAssertEqual(initReply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }, 78)
        XCTAssertEqual(initReply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt32.self) }, 7)   // major
        for text in ["outside guest memory", "a loop", "FUSE header says 4000 bytes"] {
            XCTAssertTrue(book.contains(text), "not logged: \(text)\n\(book.all)")
        }

        // A corrupt available index breaks the queue, not the server.
        (ram.base + Int(FakeRAM.avail)).storeBytes(of: ram.availIdx &+ 100, toByteOffset: 2, as: UInt16.self)
        kick.signal()
        XCTAssertTrue(waitFor { self.book.contains("queue broken") }, book.all)
        client.send(11, Self.u32(1) + Self.u32(0))
        let base = try XCTUnwrap(client.reply())
        XCTAssertEqual(base.request, 11)
        XCTAssertEqual(base.payload, Self.u32(1) + Self.u32(4))   // stopped after the 4 chains it took
        // The connection still works.
        client.send(1)
        XCTAssertEqual(Self.le64(try XCTUnwrap(client.reply()).payload), VhostOffer.features)
    }

    static func request(_ opcode: UInt32, unique: UInt64, node: UInt64, _ body: [UInt8]) -> [UInt8] {
        u32(UInt32(40 + body.count)) + u32(opcode) + u64(unique) + u64(node) + u32(0) + u32(0) + u32(1) + u32(0) + body
    }

    static func openFDCount() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }

    /// Offers `request` as chain `head` (and `head + 1` for `replySpace` bytes of reply at
    /// `gpa + 0x1000`) and kicks the queue.
    static func run(_ ram: FakeRAM, _ kick: EventCounter, _ head: UInt16, _ request: [UInt8], at gpa: UInt64,
                    replySpace: UInt32 = 512) {
        ram.write(request, at: gpa)
        ram.descriptor(Int(head), addr: gpa, len: UInt32(request.count), flags: 1, next: head + 1)
        ram.descriptor(Int(head) + 1, addr: gpa + 0x1000, len: replySpace, flags: 2)
        ram.offer(head)
        kick.signal()
    }

    /// INIT (chain 0) and CREATE "locked" O_RDWR in the root (chain 2); returns its node and
    /// the body of a flock SETLKW (F_WRLCK) through its handle.
    func initAndCreateLocked(_ ram: FakeRAM, kick: EventCounter) -> (node: UInt64, setlkw: [UInt8]) {
        Self.run(ram, kick, 0, Self.initRequest(unique: 1), at: 0x10000)
        XCTAssertTrue(waitFor { ram.usedIdx == 1 })
        // CREATE: fuse_create_in + name.
        Self.run(ram, kick, 2, Self.request(35, unique: 2, node: 1, Self.u32(UInt32(O_RDWR)) + Self.u32(0o100644) + Self.u32(0) + Self.u32(0) + Array("locked\0".utf8)),
                 at: 0x20000)
        XCTAssertTrue(waitFor { ram.usedIdx == 2 })
        let created = ram.read(16 + 128 + 16, at: 0x21000)
        XCTAssertEqual(created.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, 0, "CREATE failed")
        let node = created.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self) }
        let fh = created.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16 + 128, as: UInt64.self) }
        let lk = Self.u64(fh) + Self.u64(0x1234) + Self.u64(0) + Self.u64(UInt64.max) + Self.u32(UInt32(F_WRLCK)) + Self.u32(1)
            + Self.u32(1) + Self.u32(0)
        return (node, lk)
    }

    /// With `--max-lock-waiters 1` on the connection, a second blocking flock behind a host
    /// holder gets its chain back at once with ENOLCK (the queue holds one waiting chain, not
    /// two), and the log says which bound was reached.
    func testLockWaiterBoundOverVhost() throws {
        limits.value.withLock { $0.maxLockWaiters = 1 }
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let client = try startDevice(ram, kick: kick, call: call)
        let host = open(directory + "/src/locked", O_RDWR | O_CREAT, 0o644)
        defer { close(host) }
        XCTAssertEqual(flock(host, LOCK_EX), 0)
        let (node, lk) = initAndCreateLocked(ram, kick: kick)
        Self.run(ram, kick, 4, Self.request(33, unique: 3, node: node, lk), at: 0x30000)
        Self.run(ram, kick, 6, Self.request(33, unique: 4, node: node, lk), at: 0x40000)
        XCTAssertTrue(waitFor { ram.usedIdx == 3 }, book.all)
        XCTAssertEqual(ram.used(2).id, 6)
        let refused = ram.read(16, at: 0x41000)
        XCTAssertEqual(refused.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, -ENOLCK)
        XCTAssertEqual(refused.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }, 4)
        XCTAssertTrue(book.contains("resource bound reached: 1 blocked lock requests (--max-lock-waiters)"), book.all)
        // The first still waits; stopping the queue ends it (EINTR) and returns its chain.
        client.send(11, Self.u32(1) + Self.u32(0))
        XCTAssertEqual(try XCTUnwrap(client.reply()).payload, Self.u32(1) + Self.u32(4))
        XCTAssertEqual(ram.usedIdx, 4)
        XCTAssertEqual(ram.used(3).id, 4)
        XCTAssertEqual(flock(host, LOCK_UN), 0)
    }

    /// A guest's blocking flock waits on a host lock; stopping the queue (GET_VRING_BASE, as QEMU
    /// does when the VM stops) interrupts it: the chain comes back with EINTR, no waiter is left
    /// to take the lock later, and the connection's descriptors are all released at disconnect.
    func testStoppingAQueueEndsABlockedLockWait() throws {
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let fdsBefore = Self.openFDCount()
        var client: Client? = try startDevice(ram, kick: kick, call: call)
        let host = open(directory + "/src/locked", O_RDWR | O_CREAT, 0o644)
        XCTAssertEqual(flock(host, LOCK_EX), 0)

        let (node, lk) = initAndCreateLocked(ram, kick: kick)
        // SETLKW with LK_FLOCK, F_WRLCK: blocks on the host's flock.
        Self.run(ram, kick, 4, Self.request(33, unique: 3, node: node, lk), at: 0x30000)
        usleep(300_000)
        XCTAssertEqual(ram.usedIdx, 2, "the SETLKW did not wait")
        // Stop the queue: the wait ends with EINTR and the chain is returned.
        client!.send(11, Self.u32(1) + Self.u32(0))
        XCTAssertEqual(try XCTUnwrap(client!.reply()).payload, Self.u32(1) + Self.u32(3))
        XCTAssertEqual(ram.usedIdx, 3)
        XCTAssertEqual(ram.used(2).id, 4)
        let answer = ram.read(16, at: 0x31000)
        XCTAssertEqual(answer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) }, -EINTR)
        XCTAssertEqual(answer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }, 3)
        // No waiter took the lock once the host let go.
        XCTAssertEqual(flock(host, LOCK_UN), 0)
        usleep(200_000)
        let other = open(directory + "/src/locked", O_RDWR)
        XCTAssertEqual(flock(other, LOCK_EX | LOCK_NB), 0, "a stale waiter holds the lock")
        close(other); close(host)
        // Disconnect: every descriptor of the connection (engine, files, eventfds) is closed.
        client = nil
        XCTAssertTrue(waitFor { self.book.contains("waiting for the next vhost-user connection") }, book.all)
        XCTAssertTrue(waitFor { Self.openFDCount() == fdsBefore }, "descriptors before \(fdsBefore), after \(Self.openFDCount())")
    }

    /// QEMU stops the queues when the VM pauses and starts them again at the saved indexes when
    /// it resumes: the guest's FUSE session must go on (its node ids stay valid). A device reset
    /// (a reboot) starts them at 0: a fresh session, the old one's state released.
    func testResumeKeepsTheSessionResetStartsANewOne() throws {
        let ram = try FakeRAM(directory + "/ram")
        let kick = try EventCounter(), call = try EventCounter()
        let client = try startDevice(ram, kick: kick, call: call)
        var slot: UInt16 = 0
        func run(_ request: [UInt8]) -> [UInt8] {
            let head = slot % 8, gpa = 0x10000 + UInt64(slot % 8) * 0x2000
            slot &+= 2
            ram.write(request, at: gpa)
            ram.descriptor(Int(head), addr: gpa, len: UInt32(request.count), flags: 1, next: head + 1)
            ram.descriptor(Int(head) + 1, addr: gpa + 0x1000, len: 512, flags: 2)
            let before = ram.usedIdx
            ram.offer(head)
            kick.signal()
            XCTAssertTrue(waitFor { ram.usedIdx == before &+ 1 }, book.all)
            return ram.read(512, at: gpa + 0x1000)
        }
        func error(_ reply: [UInt8]) -> Int32 { reply.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }
        func restart(base: UInt32) {
            client.send(10, Self.u32(1) + Self.u32(base))
            client.send(12, Self.u64(1), fds: [kick.fd.rawValue])
            client.send(18, Self.u32(1) + Self.u32(1), needReply: true)
            XCTAssertEqual(Self.le64(client.reply()?.payload ?? []), 0)
        }
        mkdir(directory + "/src/dir", 0o755)
        XCTAssertEqual(error(run(Self.initRequest(unique: 1))), 0)
        let lookup = run(Self.request(1, unique: 2, node: 1, Array("dir\0".utf8)))
        XCTAssertEqual(error(lookup), 0)
        let node = lookup.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self) }
        let getattr = { (unique: UInt64) in Self.request(3, unique: unique, node: node, [UInt8](repeating: 0, count: 16)) }
        XCTAssertEqual(error(run(getattr(3))), 0)
        // A guest flock on a file: a host lock.
        let created = run(Self.request(35, unique: 10, node: 1, Self.u32(UInt32(O_RDWR)) + Self.u32(0o100644) + Self.u32(0) + Self.u32(0)
                                        + Array("held\0".utf8)))
        XCTAssertEqual(error(created), 0)
        let heldNode = created.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self) }
        let fh = created.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 16 + 128, as: UInt64.self) }
        let lk = Self.u64(fh) + Self.u64(0x99) + Self.u64(0) + Self.u64(UInt64.max) + Self.u32(UInt32(F_WRLCK)) + Self.u32(1)
            + Self.u32(1) + Self.u32(0)
        XCTAssertEqual(error(run(Self.request(32, unique: 11, node: heldNode, lk))), 0)
        let probe = open(directory + "/src/held", O_RDONLY)
        defer { close(probe) }
        XCTAssertNotEqual(flock(probe, LOCK_EX | LOCK_NB), 0, "the guest's flock is not a host lock")

        // Pause and resume: GET_VRING_BASE, then the same base again.
        client.send(11, Self.u32(1) + Self.u32(0))
        let base = try XCTUnwrap(client.reply()).payload
        XCTAssertEqual(base, Self.u32(1) + Self.u32(5))
        restart(base: 5)
        XCTAssertEqual(error(run(getattr(4))), 0, "the node id died across a pause")
        XCTAssertTrue(book.contains("same FUSE session"), book.all)
        XCTAssertNotEqual(flock(probe, LOCK_EX | LOCK_NB), 0, "the guest's lock was dropped across a pause")

        // Reset: the guest re-initialises its rings and the queues start at 0.
        client.send(11, Self.u32(1) + Self.u32(0))
        _ = client.reply()
        (ram.base + Int(FakeRAM.avail)).initializeMemory(as: UInt8.self, repeating: 0, count: 0x1000)
        (ram.base + Int(FakeRAM.used)).initializeMemory(as: UInt8.self, repeating: 0, count: 0x1000)
        ram.availIdx = 0
        slot = 0
        restart(base: 0)
        XCTAssertTrue(book.contains("new FUSE session"), book.all)
        XCTAssertEqual(error(run(Self.initRequest(unique: 6))), 0)
        // The rebooted guest's old lock is gone with the old session.
        XCTAssertTrue(waitFor { flock(probe, LOCK_EX | LOCK_NB) == 0 }, "a lock of the previous boot is still held")
    }
}
