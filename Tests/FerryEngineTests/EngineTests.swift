import FerryEngine
import FerryFS
import FerryProtocol
import FerrySystem
import Foundation
import Logging
import Synchronization
import XCTest

/// Requests as raw bytes through the engine onto a scratch directory, replies checked as bytes.
final class EngineTests: XCTestCase {
    var source = ""
    var engine: FUSEEngine!
    var worker: Worker!

    override func setUpWithError() throws {
        let template = "/var/tmp/ferry-engine.XXXXXX"
        var bytes = Array(template.utf8CString)
        XCTAssertNotNil(mkdtemp(&bytes))
        source = String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let logger = Logger(label: "test")
        let fs = try PassthroughFS(source: source, options: FSOptions(), logger: logger)
        engine = FUSEEngine(fs: fs, options: EngineOptions(), logger: logger)
        worker = engine.makeWorker()
        var initBody = Message()
        initBody.u32(7); initBody.u32(45); initBody.u32(65536); initBody.u32(UInt32(InitFlags.asyncRead.rawValue))
        let reply = send(initBody.request(26, unique: 1, node: 0))
        XCTAssertEqual(reply.error, 0)
        XCTAssertEqual(reply.body.count, FUSEABI.initOutSize)
    }

    override func tearDownWithError() throws {
        worker?.credentials.becomeRoot()   // requests switch this thread to their callers
        try? FileManager.default.removeItem(atPath: source)
    }

    struct Message {
        var bytes: [UInt8] = []
        mutating func u32(_ v: UInt32) { bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
        mutating func u64(_ v: UInt64) { bytes += withUnsafeBytes(of: v.littleEndian, Array.init) }
        mutating func name(_ s: String) { bytes += Array(s.utf8) + [0] }
        func request(_ opcode: UInt32, unique: UInt64, node: UInt64, uid: UInt32 = 0) -> [UInt8] {
            var h = Message()
            h.u32(UInt32(40 + bytes.count)); h.u32(opcode); h.u64(unique); h.u64(node)
            h.u32(uid); h.u32(uid); h.u32(0); h.u32(0)
            return h.bytes + bytes
        }
    }

    struct Reply { let unique: UInt64; let error: Int32; let body: [UInt8] }

    func send(_ bytes: [UInt8]) -> Reply {
        let result = bytes.withUnsafeBytes { engine.handle(ByteView($0), worker: worker) }
        guard case let .reply(view) = result else { return Reply(unique: 0, error: 1, body: []) }
        let all = view.bytes
        XCTAssertEqual(view.load(UInt32.self, at: 0), UInt32(all.count))
        return Reply(unique: view.load(UInt64.self, at: 8)!, error: view.load(Int32.self, at: 4)!,
                     body: Array(all[16...]))
    }

    /// A new engine on the same file system with `options`, initialised with `kernelFlags`
    /// offered (both INIT flag words).
    func restart(options: EngineOptions, kernelFlags: InitFlags = []) {
        engine = FUSEEngine(fs: engine.fs, options: options, logger: Logger(label: "test"))
        worker = engine.makeWorker()
        var initBody = Message()
        let flags = kernelFlags.union(.initExt).rawValue
        initBody.u32(7); initBody.u32(45); initBody.u32(65536); initBody.u32(UInt32(truncatingIfNeeded: flags))
        initBody.u32(UInt32(truncatingIfNeeded: flags >> 32))
        for _ in 0..<11 { initBody.u32(0) }
        XCTAssertEqual(send(initBody.request(26, unique: 1, node: 0)).error, 0)
    }

    func lookup(_ name: String, parent: UInt64 = 1) -> Reply {
        var m = Message(); m.name(name)
        return send(m.request(1, unique: 10, node: parent))
    }

    func testMalformedRequestGetsEinvalAndServingContinues() {
        var bad = Message(); bad.bytes = Array("no-terminator".utf8)
        let reply = send(bad.request(1, unique: 77, node: 1))
        XCTAssertEqual(reply.unique, 77)
        XCTAssertEqual(reply.error, -EINVAL)
        XCTAssertEqual(lookup("missing").error, -ENOENT)
        _ = FileManager.default.createFile(atPath: source + "/present", contents: Data("x".utf8))
        let found = lookup("present")
        XCTAssertEqual(found.error, 0)
        XCTAssertEqual(found.body.count, FUSEABI.entryOutSize)
    }

    /// STATX passes the host's stx_attributes, their mask and the birth time through (Linux 6.18's
    /// client then keeps only the birth time; protocol/side-effects.md).
    func testStatxCarriesHostAttributesMaskAndBirthTime() throws {
        let path = source + "/append-only"
        _ = FileManager.default.createFile(atPath: path, contents: Data("x".utf8))
        let chattr = Process()
        chattr.executableURL = URL(fileURLWithPath: "/usr/bin/chattr")
        chattr.arguments = ["+a", path]
        try chattr.run(); chattr.waitUntilExit()
        defer {
            let undo = Process()
            undo.executableURL = URL(fileURLWithPath: "/usr/bin/chattr")
            undo.arguments = ["-a", path]
            try? undo.run(); undo.waitUntilExit()
        }
        XCTAssertEqual(chattr.terminationStatus, 0, "chattr +a needs a file system with inode flags")
        let host = try Host.statx(HostFlags.atFDCWD, CName(path), flags: 0, mask: 0xfff)
        let entry = lookup("append-only")
        XCTAssertEqual(entry.error, 0)
        let node = entry.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self) }
        var m = Message()
        m.u32(0); m.u32(0); m.u64(0); m.u32(0); m.u32(0xfff)   // fuse_statx_in: basic stats + btime
        let reply = send(m.request(52, unique: 11, node: node))
        XCTAssertEqual(reply.error, 0)
        func u64(_ offset: Int) -> UInt64 { reply.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self) } }
        func i64(_ offset: Int) -> Int64 { reply.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int64.self) } }
        let mask = reply.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 32, as: UInt32.self) }
        let statxAttrAppend: UInt64 = 0x20
        XCTAssertNotEqual(u64(32 + 8) & statxAttrAppend, 0, "stx_attributes lacks STATX_ATTR_APPEND")
        XCTAssertEqual(u64(32 + 8), host.stx_attributes)
        XCTAssertEqual(u64(32 + 56), host.stx_attributes_mask)
        XCTAssertNotEqual(mask & 0x800, 0, "STATX_BTIME missing from the mask")
        XCTAssertEqual(i64(32 + 80), host.stx_btime.tv_sec)
    }

    func testUnknownOpcodeIsEnosys() {
        XCTAssertEqual(send(Message().request(200, unique: 5, node: 1)).error, -ENOSYS)
        XCTAssertEqual(send(Message().request(37, unique: 5, node: 1)).error, -ENOSYS)  // BMAP
    }

    func testForgetAndInterruptGetNoReply() {
        var f = Message(); f.u64(1)
        let result = f.request(2, unique: 3, node: 1).withUnsafeBytes { engine.handle(ByteView($0), worker: worker) }
        guard case .noReply = result else { return XCTFail("FORGET was answered") }
    }

    func testNamesThatCouldEscapeAreRefused() {
        mkdir(source + "/sub", 0o755)
        XCTAssertEqual(lookup("a/b").error, -EINVAL)
        XCTAssertEqual(lookup("../etc").error, -EINVAL)
        XCTAssertEqual(lookup("").error, -EINVAL)
        // ".." of the root is the root itself (node 1).
        let up = lookup("..")
        XCTAssertEqual(up.error, 0)
        XCTAssertEqual(up.body.prefix(8), withUnsafeBytes(of: UInt64(1).littleEndian, Array.init)[...])
        // ".." below the root is the parent directory, never above the root.
        let sub = lookup("sub")
        let subID = sub.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let subUp = lookup("..", parent: subID)
        XCTAssertEqual(subUp.error, 0)
        XCTAssertEqual(subUp.body.prefix(8), withUnsafeBytes(of: UInt64(1).littleEndian, Array.init)[...])
        var mk = Message(); mk.u32(0o755); mk.u32(0); mk.name("../escaped")
        XCTAssertEqual(send(mk.request(9, unique: 11, node: 1)).error, -EINVAL)
        XCTAssertFalse(FileManager.default.fileExists(atPath: source + "/../escaped"))
        var rn = Message(); rn.u64(1); rn.name("sub"); rn.name("../moved")
        XCTAssertEqual(send(rn.request(12, unique: 12, node: 1)).error, -EINVAL)
    }

    func testSymlinkedDirectoryIsNotFollowed() {
        symlink("/etc", source + "/etc-link")
        let link = lookup("etc-link")
        XCTAssertEqual(link.error, 0)
        let linkID = link.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(lookup("passwd", parent: linkID).error, -ENOTDIR)
        var od = Message(); od.u32(0); od.u32(0)
        XCTAssertEqual(send(od.request(27, unique: 13, node: linkID)).error, -ENOTDIR)
        var op = Message(); op.u32(0); op.u32(0)
        XCTAssertEqual(send(op.request(14, unique: 14, node: linkID)).error, -ELOOP)
    }

    /// The kernel opens FIFOs, devices and sockets itself, never through FUSE; a guest that
    /// sends OPEN or CREATE (or a truncating SETATTR) for one anyway gets an error at once.
    /// Opening a FIFO without a peer blocks, so the server must not try: a helper thread opens
    /// the FIFO's other end every second, which would release a blocked open (and fail the
    /// test) instead of hanging it.
    func testFIFOsAreNeverOpened() throws {
        let fifo = source + "/pipe"
        XCTAssertEqual(mkfifo(fifo, 0o666), 0)
        let finished = Mutex(false)
        let rescuer = Thread {
            while !finished.withLock({ $0 }) {
                sleep(1)
                let fd = open(fifo, O_RDWR | O_NONBLOCK)   // a reader and a writer: wakes either
                if fd >= 0 { close(fd) }
            }
        }
        rescuer.start()
        defer { finished.withLock { $0 = true } }
        let started = Date()
        for accessMode in [O_RDONLY, O_WRONLY, O_RDWR] {
            var create = Message()
            create.u32(UInt32(accessMode)); create.u32(0o644); create.u32(0o022); create.u32(0); create.name("pipe")
            XCTAssertEqual(send(create.request(35, unique: 20, node: 1)).error, -EIO, "CREATE over a FIFO, mode \(accessMode)")
        }
        let entry = lookup("pipe")
        XCTAssertEqual(entry.error, 0)
        let node = entry.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        for accessMode in [O_RDONLY, O_WRONLY, O_RDWR] {
            var open = Message(); open.u32(UInt32(accessMode)); open.u32(0)
            XCTAssertEqual(send(open.request(14, unique: 21, node: node)).error, -EIO, "OPEN of a FIFO, mode \(accessMode)")
        }
        var truncate = Message()
        truncate.u32(1 << 3); truncate.u32(0)                  // FATTR_SIZE
        for _ in 0..<6 { truncate.u64(0) }                     // fh, size 0, lock owner, times
        for _ in 0..<8 { truncate.u32(0) }
        XCTAssertEqual(send(truncate.request(4, unique: 22, node: node)).error, -EINVAL, "truncate(2) of a FIFO")
        XCTAssertLessThan(Date().timeIntervalSince(started), 1, "a request waited for the FIFO's other end")
        // A regular file is still created and opened over an existing name (O_CREAT without O_EXCL).
        _ = FileManager.default.createFile(atPath: source + "/plain", contents: Data("x".utf8))
        var create = Message()
        create.u32(UInt32(O_RDWR)); create.u32(0o644); create.u32(0o022); create.u32(0); create.name("plain")
        XCTAssertEqual(send(create.request(35, unique: 23, node: 1)).error, 0)
        var exclusive = Message()
        exclusive.u32(UInt32(O_RDWR | O_EXCL)); exclusive.u32(0o644); exclusive.u32(0o022); exclusive.u32(0); exclusive.name("plain")
        XCTAssertEqual(send(exclusive.request(35, unique: 24, node: 1)).error, -EEXIST)
    }

    /// A FALLOCATE (like an O_DIRECT WRITE) is queued on the io_uring engine and reaches the
    /// kernel with a later io_uring_enter. The host clears a set-id bit only for a submitter
    /// without CAP_FSETID, so the operation must start under its caller's credentials: a
    /// request of another caller (here root's GETATTR) in between flushes it first. Submitted
    /// as root, the set-user-id bit would stay.
    func testQueuedDataOperationsStartUnderTheirCallersCredentials() throws {
        var options = EngineOptions()
        options.ioEngine = .uring
        restart(options: options)
        guard worker.completionFD != nil else { throw XCTSkip("io_uring is not available here (the sync engine ran)") }
        let path = source + "/setuid-program"
        _ = FileManager.default.createFile(atPath: path, contents: Data(repeating: 1, count: 4096))
        XCTAssertEqual(chown(path, 1000, 1000), 0)
        XCTAssertEqual(chmod(path, 0o4755), 0)
        let entry = lookup("setuid-program")
        XCTAssertEqual(entry.error, 0)
        let node = entry.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        var open = Message(); open.u32(UInt32(O_WRONLY)); open.u32(0)
        let opened = send(open.request(14, unique: 30, node: node, uid: 1000))
        XCTAssertEqual(opened.error, 0)
        let fh = opened.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        var allocate = Message(); allocate.u64(fh); allocate.u64(0); allocate.u64(8192); allocate.u32(0); allocate.u32(0)
        let queued = allocate.request(43, unique: 31, node: node, uid: 1000).withUnsafeBytes {
            engine.handle(ByteView($0), worker: worker)
        }
        guard case .noReply = queued else { return XCTFail("FALLOCATE was answered before its I/O completed") }
        var getattr = Message(); getattr.u32(0); getattr.u32(0); getattr.u64(0)
        XCTAssertEqual(send(getattr.request(3, unique: 32, node: 1)).error, 0)   // as root
        var replies: [Int32] = []
        while worker.dataInFlight > 0 {
            _ = engine.completeData(worker, wait: true) { reply in
                replies.append(reply.load(Int32.self, at: 4) ?? 1)
                return true
            }
        }
        XCTAssertEqual(replies, [0])
        let host = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual(host[.size] as? Int, 8192, "the FALLOCATE did not run")
        XCTAssertEqual(host[.posixPermissions] as? Int, 0o755, "the set-user-id bit survived: the FALLOCATE ran as root")
    }

    func testUnknownNodeAndHandleAreErrors() {
        XCTAssertEqual(lookup("x", parent: 999_999).error, -ESTALE)
        var r = Message(); r.u64(123_456); r.u64(0); r.u32(10); r.u32(0); r.u64(0); r.u32(0); r.u32(0)
        XCTAssertEqual(send(r.request(15, unique: 15, node: 1)).error, -EBADF)
    }

    /// With change notifications a missing name is a cacheable negative entry (node 0, the
    /// cache timeout); without them it is ENOENT, which the kernel does not cache.
    func testMissingNameIsANegativeEntryOnlyWithNotifications() throws {
        let missing = lookup("not-here")
        XCTAssertEqual(missing.error, -ENOENT)
        var options = EngineOptions()
        options.cache = .always
        options.notifications = true
        restart(options: options)
        let negative = lookup("not-here")
        XCTAssertEqual(negative.error, 0)
        XCTAssertEqual(negative.body.count, FUSEABI.entryOutSize)
        let words = negative.body.withUnsafeBytes { raw in (0..<3).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
        XCTAssertEqual(words[0], 0, "node id 0")
        XCTAssertEqual(words[2], 86_400, "entry timeout: the cache mode's")
    }

    /// LOOKUP(".") is how the kernel decodes a file handle of the mount: a node it no longer
    /// holds comes back under the same id (derived from the host file handle, generation 0);
    /// an id no file inside the share gives is ESTALE.
    func testLookupOfDotFindsAForgottenNodeByItsID() {
        mkdir(source + "/dir", 0o755)
        _ = FileManager.default.createFile(atPath: source + "/dir/file", contents: Data("x".utf8))
        let dir = lookup("dir")
        let dirID = dir.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let file = lookup("file", parent: dirID)
        XCTAssertEqual(file.error, 0)
        let fileID = file.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let generation = file.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self) }
        XCTAssertEqual(generation, 0, "derived ids carry generation 0 (the id holds the host's)")
        for node in [fileID, dirID] {
            var forget = Message(); forget.u64(1)
            _ = forget.request(2, unique: 20, node: node).withUnsafeBytes { engine.handle(ByteView($0), worker: worker) }
        }
        XCTAssertEqual(lookup("x", parent: fileID).error, -ESTALE, "forgotten")
        let again = lookup(".", parent: fileID)
        XCTAssertEqual(again.error, 0)
        XCTAssertEqual(again.body.prefix(16), file.body.prefix(16), "same node id and generation")
        XCTAssertEqual(lookup(".", parent: dirID).body.prefix(16), dir.body.prefix(16))
        let parent = lookup("..", parent: dirID)
        XCTAssertEqual(parent.body.prefix(8), withUnsafeBytes(of: UInt64(1).littleEndian, Array.init)[...])
        XCTAssertEqual(lookup(".", parent: 0x0123_4567_89ab_cdef).error, -ESTALE)
        XCTAssertEqual(lookup(".", parent: fileID ^ (1 << 40)).error, -ESTALE, "another host generation")
    }

    /// A node kept as a file handle whose host file is deleted is stale (ESTALE), also when
    /// Ferry keeps an O_PATH descriptor of it from the lookup; a file that keeps another name
    /// stays reachable, and so does a directory renamed on the host. In a directory removed on
    /// the host, calls by name fail with ENOENT until its descriptor is dropped.
    func testDeletedFilesAreStaleDespiteKeptDescriptors() {
        _ = FileManager.default.createFile(atPath: source + "/gone", contents: Data("x".utf8))
        _ = FileManager.default.createFile(atPath: source + "/linked", contents: Data("x".utf8))
        XCTAssertEqual(link(source + "/linked", source + "/second-name"), 0)
        mkdir(source + "/dir", 0o755)
        func nodeID(_ reply: Reply) -> UInt64 { reply.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
        func getattr(_ node: UInt64) -> Int32 {
            var m = Message(); m.u32(0); m.u32(0); m.u64(0)
            return send(m.request(3, unique: 30, node: node)).error
        }
        let gone = nodeID(lookup("gone")), linked = nodeID(lookup("linked")), dir = nodeID(lookup("dir"))
        for node in [gone, linked, dir] { XCTAssertEqual(getattr(node), 0) }
        XCTAssertEqual(unlink(source + "/gone"), 0)
        XCTAssertEqual(unlink(source + "/linked"), 0)
        XCTAssertEqual(rename(source + "/dir", source + "/moved"), 0)
        XCTAssertEqual(getattr(gone), -ESTALE, "deleted on the host")
        XCTAssertEqual(getattr(gone), -ESTALE, "deleted on the host, asked again")
        XCTAssertEqual(getattr(linked), 0, "still has a name")
        XCTAssertEqual(getattr(dir), 0, "renamed")
        XCTAssertEqual(lookup("x", parent: dir).error, -ENOENT)
        XCTAssertEqual(rmdir(source + "/moved"), 0)
        // Calls by name in the removed directory fail as in a local one; the directory is stale.
        XCTAssertEqual(lookup("x", parent: dir).error, -ENOENT, "in a directory removed on the host")
        var create = Message(); create.u32(UInt32(O_CREAT | O_WRONLY)); create.u32(0o644); create.u32(0); create.u32(0)
        create.name("new")
        XCTAssertEqual(send(create.request(35, unique: 40, node: dir)).error, -ENOENT, "no file in a removed directory")
        XCTAssertEqual(getattr(dir), -ESTALE, "removed on the host")
        XCTAssertEqual(lookup("x", parent: dir).error, -ESTALE, "its descriptor is no longer kept")
    }

    /// A LOOKUP of a name whose node is held answers that node (without opening the file) with
    /// fresh attributes and one more reference; a name the host gave to another file since,
    /// even one that reuses the inode number of a deleted file, answers a new node.
    func testLookupOfAHeldNameFindsItsNodeAndAReplacedNameANewOne() throws {
        func nodeID(_ reply: Reply) -> UInt64 { reply.body.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
        func size(_ reply: Reply) -> UInt64 { reply.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 40 + 8, as: UInt64.self) } }
        func ino(_ reply: Reply) -> UInt64 { reply.body.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 40, as: UInt64.self) } }
        func forget(_ node: UInt64) {
            var m = Message(); m.u64(1)
            _ = m.request(2, unique: 20, node: node).withUnsafeBytes { engine.handle(ByteView($0), worker: worker) }
        }
        _ = FileManager.default.createFile(atPath: source + "/a", contents: Data("x".utf8))
        _ = FileManager.default.createFile(atPath: source + "/b", contents: Data("yyy".utf8))
        let first = lookup("a")
        XCTAssertEqual(first.error, 0)
        try Data("longer".utf8).write(to: URL(fileURLWithPath: source + "/a"))
        let again = lookup("a")
        XCTAssertEqual(nodeID(again), nodeID(first), "the held node")
        XCTAssertEqual(size(again), 6, "attributes taken now")
        forget(nodeID(first))
        XCTAssertEqual(lookup(".", parent: nodeID(first)).error, 0, "two lookups, one forget: still held")

        XCTAssertEqual(rename(source + "/b", source + "/a"), 0)
        let renamed = lookup("a")
        XCTAssertNotEqual(nodeID(renamed), nodeID(first), "another file under the same name")
        XCTAssertEqual(size(renamed), 3)

        // Inode numbers of deleted files come back on ext4: the handle's generation tells them apart.
        let held = lookup("a")
        XCTAssertEqual(unlink(source + "/a"), 0)
        // Ferry drops a descriptor it kept of the file (which pins the inode) once it sees it gone.
        var getattr = Message(); getattr.u32(0); getattr.u32(0); getattr.u64(0)
        XCTAssertEqual(send(getattr.request(3, unique: 30, node: nodeID(held))).error, -ESTALE)
        var reused = false
        for i in 0..<200 where !reused {
            _ = FileManager.default.createFile(atPath: source + "/n\(i)", contents: Data("zz".utf8))
            var st = stat()
            XCTAssertEqual(lstat(source + "/n\(i)", &st), 0)
            if st.st_ino == ino(held) {
                XCTAssertEqual(rename(source + "/n\(i)", source + "/a"), 0)
                reused = true
            }
        }
        guard reused else { throw XCTSkip("the host file system did not reuse the inode number") }
        let successor = lookup("a")
        XCTAssertEqual(ino(successor), ino(held))
        XCTAssertNotEqual(nodeID(successor), nodeID(held), "same inode number, another file")
        XCTAssertEqual(size(successor), 2)
    }
}
