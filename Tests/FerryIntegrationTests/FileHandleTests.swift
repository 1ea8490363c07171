import Foundation
import XCTest

/// File handles of the mount (name_to_handle_at, then open_by_handle_at, as an NFS server
/// re-exporting the mount or a fanotify tool uses them), each compared with the same calls on a
/// plain host directory: a handle stays valid while its file exists — also once the kernel has
/// forgotten the node, after a remount and after a server restart — and is stale (ESTALE) once
/// the file is gone, also when a new file took its name and inode number. A handle crafted to
/// name a host file outside SOURCE is stale too. Runs as root (CAP_DAC_READ_SEARCH).
final class FileHandleTests: XCTestCase {
    /// scripts/fhandle.c, built once per run.
    private static let helper: Result<String, Error> = Result {
        let binary = try Scratch.directory("ferry-fhandle", lifetime: .wholeRun) + "/fhandle"
        let build = try runCommand(["gcc", "-O2", "-Wall", "-o", binary, script("fhandle.c")])
        guard build.status == 0 else { throw TestFailure("gcc fhandle.c: \(build.output)") }
        return binary
    }

    /// A file handle as name_to_handle_at gave it.
    struct Handle: CustomStringConvertible {
        let type: Int
        let bytes: [UInt8]
        var hex: String { bytes.map { String(format: "%02x", $0) }.joined() }
        var description: String { "\(type):\(hex)" }
    }

    /// A host directory and a mount of another one, laid out alike, to run each step on both.
    struct Sides {
        let host: String
        let server: FerryServer
        var both: [(name: String, root: String)] { [("host", host), ("mount", server.mountpoint)] }
    }

    private func makeSides(arguments: [String] = []) throws -> Sides {
        let server = try FerryServer(arguments: arguments)
        let host = URL(fileURLWithPath: server.source).deletingLastPathComponent().appendingPathComponent("host").path
        try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true)
        return Sides(host: host, server: server)
    }

    func handle(_ path: String) throws -> Handle {
        let result = try runCommand([try FileHandleTests.helper.get(), "get", path])
        let fields = result.output.split(separator: "\n").first?.split(separator: " ") ?? []
        guard result.status == 0, fields.count == 2, let type = Int(fields[0]) else {
            throw TestFailure("name_to_handle_at \(path): \(result.output)")
        }
        let hex = Array(fields[1].utf8)
        let bytes = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        return Handle(type: type, bytes: bytes)
    }

    /// open_by_handle_at of `handle` with a descriptor of `mount`: "ok" if it opened `path`
    /// (and, for a directory, its ".." is `path`'s parent), "wrong file" if it opened something
    /// else, else "error ENAME".
    func open(_ handle: Handle, on mount: String, expecting path: String) throws -> String {
        let result = try runCommand([try FileHandleTests.helper.get(), "open", mount, String(handle.type), handle.hex])
        let fields = result.output.split(separator: "\n").first?.split(separator: " ").map(String.init) ?? []
        guard fields.first == "ok" else { return fields.prefix(2).joined(separator: " ") }
        var expected = [String(try inode(path))]
        if fields.count == 3 { expected.append(String(try inode((path as NSString).deletingLastPathComponent))) }
        return Array(fields.dropFirst()) == expected ? "ok" : "wrong file"
    }

    func inode(_ path: String) throws -> UInt64 {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw TestFailure("lstat \(path): errno \(errno)") }
        return UInt64(st.st_ino)
    }

    /// The kernel forgets every node no process holds (the mount stays up).
    func dropCaches() throws {
        sync()
        try "2".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
    }

    func write(_ path: String, _ text: String = "data\n") throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// Opens each handle on each side and checks the outcome is `expected` on both.
    func expect(_ expected: String, _ cases: [(side: String, root: String, handle: Handle, path: String)],
                _ step: String, file: StaticString = #filePath, line: UInt = #line) throws {
        for c in cases {
            XCTAssertEqual(try open(c.handle, on: c.root, expecting: c.path), expected,
                           "\(step): \(c.side) \(c.path) \(c.handle)", file: file, line: line)
        }
    }

    func testHandlesStayValidOnceTheKernelForgetsTheNode() throws {
        let sides = try makeSides()
        defer { sides.server.stop() }
        var cases: [(side: String, root: String, handle: Handle, path: String)] = []
        for (side, root) in sides.both {
            try write(root + "/file")
            try FileManager.default.createDirectory(atPath: root + "/dir/sub", withIntermediateDirectories: true)
            for path in ["", "/file", "/dir", "/dir/sub"] {   // "": the root itself (node 1 on the mount)
                cases.append((side, root, try handle(root + path), root + path))
            }
        }
        try expect("ok", cases, "while the kernel holds the nodes")
        try dropCaches()
        try expect("ok", cases, "after drop_caches")
        try dropCaches()
        try expect("ok", cases, "after drop_caches, again")
        XCTAssertTrue(FerryServer.isMounted(sides.server.mountpoint))
    }

    func testHandlesOutliveARemountAndAServerRestart() throws {
        let sides = try makeSides()
        let first = sides.server
        defer { first.stop() }
        var cases: [(side: String, root: String, handle: Handle, path: String)] = []
        for (side, root) in sides.both {
            try write(root + "/file")
            try FileManager.default.createDirectory(atPath: root + "/dir/sub", withIntermediateDirectories: true)
            for path in ["/file", "/dir/sub"] { cases.append((side, root, try handle(root + path), root + path)) }
        }
        try expect("ok", cases, "first server")
        XCTAssertEqual(first.stop(), 0, first.log)
        XCTAssertFalse(FerryServer.isMounted(first.mountpoint))
        let server = try FerryServer(source: first.source, mountpoint: first.mountpoint)   // `first` stays referenced
        defer { server.stop() }
        try expect("ok", cases, "second server on the same SOURCE and MOUNTPOINT")
        // Directories are found again even when the host has forgotten their names too.
        try dropCaches()
        try expect("ok", cases.filter { $0.path.hasSuffix("/dir/sub") }, "second server, after drop_caches")
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    func testHandlesOfDeletedAndReplacedFilesAreStale() throws {
        let sides = try makeSides()
        defer { sides.server.stop() }
        for (side, root) in sides.both {
            // Deleted (through the side itself; for the mount also on the host behind it).
            try write(root + "/gone")
            try FileManager.default.createDirectory(atPath: root + "/gonedir", withIntermediateDirectories: true)
            let gone = try handle(root + "/gone"), goneDir = try handle(root + "/gonedir")
            try dropCaches()
            try expect("ok", [(side, root, gone, root + "/gone"), (side, root, goneDir, root + "/gonedir")], "before deletion")
            XCTAssertEqual(unlink(root + "/gone"), 0)
            XCTAssertEqual(rmdir(root + "/gonedir"), 0)
            try expect("error ESTALE", [(side, root, gone, root + "/gone"), (side, root, goneDir, root + "/gonedir")],
                       "deleted")
            try dropCaches()
            try expect("error ESTALE", [(side, root, gone, root + "/gone")], "deleted, after drop_caches")

            // Replaced: a new file under the same name, usually with the same inode number.
            try write(root + "/name", "first\n")
            let first = try handle(root + "/name"), firstInode = try inode(root + "/name")
            XCTAssertEqual(unlink(root + "/name"), 0)
            try write(root + "/name", "second\n")
            let reused = firstInode == (try inode(root + "/name"))
            print("\(side): the replacing file \(reused ? "reused" : "did not reuse") the inode number")
            let second = try handle(root + "/name")
            XCTAssertNotEqual(first.bytes, second.bytes, side)
            try expect("error ESTALE", [(side, root, first, root + "/name")], "replaced")
            try expect("ok", [(side, root, second, root + "/name")], "the new file's own handle")
            try dropCaches()
            try expect("error ESTALE", [(side, root, first, root + "/name")], "replaced, after drop_caches")
            try expect("ok", [(side, root, second, root + "/name")], "the new file's own handle, after drop_caches")
        }
        // A file the host deletes behind the mount's back, while the kernel still caches it.
        let mount = sides.server.mountpoint
        try write(mount + "/hostgone")
        let hostGone = try handle(mount + "/hostgone")
        XCTAssertEqual(unlink(sides.server.source + "/hostgone"), 0)
        XCTAssertEqual(try open(hostGone, on: mount, expecting: mount + "/hostgone").prefix(5), "error")
        try dropCaches()
        XCTAssertEqual(try open(hostGone, on: mount, expecting: mount + "/hostgone"), "error ESTALE")
    }

    /// A handle is a node id the client supplies: one made from a host file outside SOURCE
    /// (on the same file system) must not open that file.
    func testCraftedHandlesReachOnlyFilesInsideTheShare() throws {
        let server = try FerryServer()
        defer { server.stop() }
        let scratch = URL(fileURLWithPath: server.source).deletingLastPathComponent().path
        let outside = scratch + "/outside"
        try FileManager.default.createDirectory(atPath: outside + "/dir", withIntermediateDirectories: true)
        try write(outside + "/secret", "not shared\n")
        try write(server.source + "/inside", "shared\n")   // made on the host: the kernel has no node for it
        let mountHandle = try handle(server.mountpoint + "/inside")
        try dropCaches()   // forget the node that name_to_handle_at made
        XCTAssertEqual(mountHandle.type, 0x81, "FILEID_INO64_GEN")
        XCTAssertEqual(mountHandle.bytes.count, 12)

        /// The FUSE handle (node id, generation 0) for the node id Ferry derives from a host handle.
        func crafted(_ hostPath: String, zeroingGeneration: Bool = false) throws -> Handle {
            var host = try handle(hostPath).bytes
            guard host.count >= 8, host.dropFirst(8).allSatisfy({ $0 == 0 }) else {
                throw XCTSkip("host handles of \(host.count) bytes give no persistent node ids")
            }
            if zeroingGeneration { host.replaceSubrange(4..<8, with: [0, 0, 0, 0]) }   // ext4: ino, then generation
            let id = host.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            let words = [UInt32(id >> 32), UInt32(truncatingIfNeeded: id), 0]
            return Handle(type: 0x81, bytes: words.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) })
        }
        // The control: the same construction for a file inside SOURCE opens it.
        let control = try crafted(server.source + "/inside")
        XCTAssertEqual(control.bytes, mountHandle.bytes, "Ferry derives node ids as this test does")
        XCTAssertEqual(try open(control, on: server.mountpoint, expecting: server.mountpoint + "/inside"), "ok")
        let secret = try crafted(outside + "/secret"), directory = try crafted(outside + "/dir")
        let scratchDirectory = try crafted(scratch)
        for step in ["host names cached", "after drop_caches"] {
            XCTAssertEqual(try open(secret, on: server.mountpoint, expecting: outside + "/secret"), "error ESTALE", step)
            XCTAssertEqual(try open(directory, on: server.mountpoint, expecting: outside + "/dir"), "error ESTALE", step)
            XCTAssertEqual(try open(scratchDirectory, on: server.mountpoint, expecting: scratch), "error ESTALE", step)
            try dropCaches()
        }
        // ext4 opens a handle whose generation is 0 whatever the inode's generation: Ferry
        // still refuses it, since the file's real handle gives another node id.
        try write(server.source + "/other", "shared\n")
        let wildcard = try crafted(server.source + "/other", zeroingGeneration: true)
        XCTAssertEqual(try open(wildcard, on: server.mountpoint, expecting: server.source + "/other"), "error ESTALE")
        XCTAssertEqual(server.stop(), 0, server.log)
    }

    /// Node ids counted out by one run (here all of them: `--inode-file-handles never`) carry a
    /// random generation, so a handle from an earlier run is stale instead of opening whichever
    /// file got the same id this time.
    func testCountedNodeIDsOfAnEarlierRunAreStale() throws {
        // Two servers, one after the other; both stay referenced to the end (a FerryServer
        // unmounts its mount point when it goes away).
        let first = try FerryServer(arguments: ["--inode-file-handles", "never"])
        defer { first.stop() }
        let names = (0..<500).map { "f\($0)" }
        for name in names { try write(first.source + "/" + name, name + "\n") }
        let old = try handle(first.mountpoint + "/f0")
        XCTAssertEqual(try open(old, on: first.mountpoint, expecting: first.mountpoint + "/f0"), "ok")
        XCTAssertEqual(first.stop(), 0, first.log)
        let second = try FerryServer(source: first.source, mountpoint: first.mountpoint,
                                     arguments: ["--inode-file-handles", "never"])
        defer { second.stop() }
        let now = try names.dropFirst().map { try handle(second.mountpoint + "/" + $0) }
        XCTAssertTrue(now.contains { $0.bytes.prefix(8) == old.bytes.prefix(8) },
                      "some file of the second run has the node id f0 had (else this test proves nothing)")
        XCTAssertEqual(try open(old, on: second.mountpoint, expecting: second.mountpoint + "/f0"), "error ESTALE")
        XCTAssertEqual(second.stop(), 0, second.log)
    }
}
