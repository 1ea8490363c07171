import XCTest
@testable import FerryProtocol

/// Every opcode decodes from bytes laid out per the kernel's ABI.
final class DecodeTests: XCTestCase {
    func testHeader() throws {
        var b = RequestBytes(); b.name("x")
        let r = try decode(b.message(.lookup, unique: 99, node: 5))
        XCTAssertEqual(r.header, InHeader(length: 42, opcode: 1, unique: 99, nodeID: 5, uid: 1000, gid: 100, pid: 4242))
        guard case let .lookup(name) = r.operation else { return XCTFail("\(r.operation)") }
        XCTAssertEqual(name, Array("x".utf8))
    }

    func testInitWithFlags2() throws {
        var b = RequestBytes()
        b.u32(7); b.u32(45); b.u32(131072); b.u32(0x73ff_fffb); b.u32(0x3ff)
        b.body += [UInt8](repeating: 0, count: 44)
        guard case let .initialize(i) = try decode(b.message(.`init`)).operation else { return XCTFail() }
        XCTAssertEqual(i.major, 7); XCTAssertEqual(i.minor, 45); XCTAssertEqual(i.maxReadahead, 131072)
        XCTAssertEqual(i.flags.rawValue, 0x3ff_73ff_fffb)
        XCTAssertTrue(i.flags.contains(.passthrough))
    }

    func testOldInitWithoutFlags2() throws {
        var b = RequestBytes(); b.u32(7); b.u32(26); b.u32(65536); b.u32(1)
        guard case let .initialize(i) = try decode(b.message(.`init`)).operation else { return XCTFail() }
        XCTAssertEqual(i.minor, 26); XCTAssertEqual(i.flags, .asyncRead)
    }

    func testForgetAndBatchForget() throws {
        var f = RequestBytes(); f.u64(3)
        guard case .forget(3) = try decode(f.message(.forget, node: 9)).operation else { return XCTFail() }
        var b = RequestBytes(); b.u32(2); b.u32(0); b.u64(10); b.u64(1); b.u64(11); b.u64(5)
        guard case let .batchForget(items) = try decode(b.message(.batchForget)).operation else { return XCTFail() }
        XCTAssertEqual(items.map(\.nodeID), [10, 11]); XCTAssertEqual(items.map(\.nlookup), [1, 5])
    }

    func testGetattrSetattrStatx() throws {
        var g = RequestBytes(); g.u32(1); g.u32(0); g.u64(77)
        guard case .getattr(1, 77) = try decode(g.message(.getattr)).operation else { return XCTFail() }
        var s = RequestBytes()
        s.u32(SetattrValid([.mode, .size, .mtimeNow]).rawValue); s.u32(0)
        s.u64(8); s.u64(4096); s.u64(0); s.u64(1); s.u64(2); s.u64(3)
        s.u32(4); s.u32(5); s.u32(6); s.u32(0o100644); s.u32(0); s.u32(10); s.u32(20); s.u32(0)
        guard case let .setattr(a) = try decode(s.message(.setattr)).operation else { return XCTFail() }
        XCTAssertEqual(a.valid, [.mode, .size, .mtimeNow]); XCTAssertEqual(a.size, 4096); XCTAssertEqual(a.mode, 0o100644)
        XCTAssertEqual(a.fh, 8); XCTAssertEqual(a.mtime, 2); XCTAssertEqual(a.ctimeNsec, 6); XCTAssertEqual(a.gid, 20)
        var x = RequestBytes(); x.u32(1); x.u32(0); x.u64(5); x.u32(0x2000); x.u32(0xfff)
        guard case let .statx(sx) = try decode(x.message(.statx)).operation else { return XCTFail() }
        XCTAssertEqual(sx, StatxIn(getattrFlags: 1, fh: 5, statxFlags: 0x2000, mask: 0xfff))
    }

    func testNameOperations() throws {
        var sym = RequestBytes(); sym.name("link"); sym.name("../target")
        guard case let .symlink(n, t) = try decode(sym.message(.symlink)).operation else { return XCTFail() }
        XCTAssertEqual(n, Array("link".utf8)); XCTAssertEqual(t, Array("../target".utf8))
        var mk = RequestBytes(); mk.u32(0o20644); mk.u32(0x103); mk.u32(0o22); mk.u32(0); mk.name("dev")
        guard case .mknod(_, 0o20644, 0x103, 0o22) = try decode(mk.message(.mknod)).operation else { return XCTFail() }
        var md = RequestBytes(); md.u32(0o755); md.u32(0o22); md.name("d")
        guard case .mkdir(_, 0o755, 0o22) = try decode(md.message(.mkdir)).operation else { return XCTFail() }
        var u = RequestBytes(); u.name("gone")
        guard case .unlink = try decode(u.message(.unlink)).operation else { return XCTFail() }
        guard case .rmdir = try decode(u.message(.rmdir)).operation else { return XCTFail() }
        var rn = RequestBytes(); rn.u64(9); rn.name("a"); rn.name("b")
        guard case .rename(9, 0, _, _) = try decode(rn.message(.rename)).operation else { return XCTFail() }
        var r2 = RequestBytes(); r2.u64(9); r2.u32(2); r2.u32(0); r2.name("a"); r2.name("b")
        guard case let .rename(9, 2, a, b) = try decode(r2.message(.rename2)).operation else { return XCTFail() }
        XCTAssertEqual(a, [0x61]); XCTAssertEqual(b, [0x62])
        var l = RequestBytes(); l.u64(12); l.name("hard")
        guard case .link(12, _) = try decode(l.message(.link)).operation else { return XCTFail() }
    }

    func testOpenCreateTmpfile() throws {
        var o = RequestBytes(); o.u32(0o2); o.u32(1)
        guard case .open(0o2, 1) = try decode(o.message(.open)).operation else { return XCTFail() }
        guard case .opendir(0o2) = try decode(o.message(.opendir)).operation else { return XCTFail() }
        var c = RequestBytes(); c.u32(0o101); c.u32(0o644); c.u32(0o22); c.u32(0); c.name("new")
        guard case .create(_, 0o101, 0o644, 0o22, 0) = try decode(c.message(.create)).operation else { return XCTFail() }
        var t = RequestBytes(); t.u32(0o2); t.u32(0o600); t.u32(0o77); t.u32(0)
        guard case .tmpfile(0o2, 0o600, 0o77, 0) = try decode(t.message(.tmpfile)).operation else { return XCTFail() }
    }

    private func io(_ size: UInt32, payload: [UInt8] = []) -> RequestBytes {
        var b = RequestBytes()
        b.u64(3); b.u64(4096); b.u32(size); b.u32(0); b.u64(0xabc); b.u32(0o2); b.u32(0)
        b.body += payload
        return b
    }

    func testReadWriteReaddir() throws {
        guard case let .read(r) = try decode(io(65536).message(.read)).operation else { return XCTFail() }
        XCTAssertEqual(r, IOIn(fh: 3, offset: 4096, size: 65536, ioFlags: 0, lockOwner: 0xabc, openFlags: 0o2))
        guard case let .write(w, data) = try decode(io(5, payload: Array("hello".utf8)).message(.write)).operation
        else { return XCTFail() }
        XCTAssertEqual(w.size, 5); XCTAssertEqual(data.bytes, Array("hello".utf8))
        guard case .readdir = try decode(io(4096).message(.readdir)).operation else { return XCTFail() }
        guard case .readdirplus = try decode(io(4096).message(.readdirplus)).operation else { return XCTFail() }
    }

    func testFlushReleaseFsync() throws {
        var f = RequestBytes(); f.u64(3); f.u32(0); f.u32(0); f.u64(0x55)
        guard case .flush(3, 0x55) = try decode(f.message(.flush)).operation else { return XCTFail() }
        var r = RequestBytes(); r.u64(3); r.u32(0o2); r.u32(2); r.u64(0x55)
        guard case .release(3, 0o2, 2, 0x55) = try decode(r.message(.release)).operation else { return XCTFail() }
        guard case .releasedir(3) = try decode(r.message(.releasedir)).operation else { return XCTFail() }
        var s = RequestBytes(); s.u64(3); s.u32(1); s.u32(0)
        guard case .fsync(3, 1) = try decode(s.message(.fsync)).operation else { return XCTFail() }
        guard case .fsyncdir(3, 1) = try decode(s.message(.fsyncdir)).operation else { return XCTFail() }
    }

    func testXattrOperations() throws {
        var s = RequestBytes(); s.u32(3); s.u32(1); s.name("user.a"); s.body += [1, 2, 3]
        guard case let .setxattr(n, v, 1) = try decode(s.message(.setxattr)).operation else { return XCTFail() }
        XCTAssertEqual(n, Array("user.a".utf8)); XCTAssertEqual(v.bytes, [1, 2, 3])
        var g = RequestBytes(); g.u32(64); g.u32(0); g.name("user.a")
        guard case .getxattr(_, 64) = try decode(g.message(.getxattr)).operation else { return XCTFail() }
        var l = RequestBytes(); l.u32(0); l.u32(0)
        guard case .listxattr(0) = try decode(l.message(.listxattr)).operation else { return XCTFail() }
        var r = RequestBytes(); r.name("user.a")
        guard case .removexattr = try decode(r.message(.removexattr)).operation else { return XCTFail() }
    }

    func testMiscOperations() throws {
        var a = RequestBytes(); a.u32(4); a.u32(0)
        guard case .access(4) = try decode(a.message(.access)).operation else { return XCTFail() }
        var fa = RequestBytes(); fa.u64(3); fa.u64(10); fa.u64(20); fa.u32(3); fa.u32(0)
        guard case .fallocate(3, 10, 20, 3) = try decode(fa.message(.fallocate)).operation else { return XCTFail() }
        var ls = RequestBytes(); ls.u64(3); ls.u64(100); ls.u32(3); ls.u32(0)
        guard case .lseek(3, 100, 3) = try decode(ls.message(.lseek)).operation else { return XCTFail() }
        var c = RequestBytes(); for v: UInt64 in [1, 2, 3, 4, 5, 6, 0] { c.u64(v) }
        guard case let .copyFileRange(cf) = try decode(c.message(.copyFileRange)).operation else { return XCTFail() }
        XCTAssertEqual(cf, CopyFileRangeIn(fhIn: 1, offsetIn: 2, nodeIDOut: 3, fhOut: 4, offsetOut: 5, length: 6, flags: 0))
        var i = RequestBytes(); i.u64(77)
        guard case .interrupt(77) = try decode(i.message(.interrupt)).operation else { return XCTFail() }
        guard case .statfs = try decode(RequestBytes().message(.statfs)).operation else { return XCTFail() }
        guard case .syncfs = try decode(RequestBytes().message(.syncfs)).operation else { return XCTFail() }
        guard case .readlink = try decode(RequestBytes().message(.readlink)).operation else { return XCTFail() }
        guard case .destroy = try decode(RequestBytes().message(.destroy)).operation else { return XCTFail() }
        var io = RequestBytes(); io.u64(3); io.u32(0); io.u32(0x4008_6602); io.u64(0); io.u32(8); io.u32(0)
        io.body += [1, 0, 0, 0, 0, 0, 0, 0]
        guard case let .ioctl(ic) = try decode(io.message(.ioctl)).operation else { return XCTFail() }
        XCTAssertEqual(ic.command, 0x4008_6602); XCTAssertEqual(ic.data.bytes.count, 8)
        var lk = RequestBytes(); lk.u64(3); lk.u64(9); lk.u64(0); lk.u64(99); lk.u32(1); lk.u32(500); lk.u32(0); lk.u32(0)
        guard case let .getlk(g) = try decode(lk.message(.getlk)).operation else { return XCTFail() }
        XCTAssertEqual(g.lock, FileLock(start: 0, end: 99, type: 1, pid: 500))
        guard case .setlk(_, true) = try decode(lk.message(.setlkw)).operation else { return XCTFail() }
        guard case .setlk(_, false) = try decode(lk.message(.setlk)).operation else { return XCTFail() }
    }

    func testUnknownAndUnservedOpcodesDecodeAsUnsupported() throws {
        var h = RequestBytes().message(.statfs)
        h[4] = 200
        guard case .unsupported(200) = try decode(h).operation else { return XCTFail() }
        guard case .unsupported(37) = try decode(RequestBytes().message(.bmap)).operation else { return XCTFail() }
    }

    func testExtensionAreaIsSkipped() throws {
        var c = RequestBytes(); c.u32(0o101); c.u32(0o644); c.u32(0o22); c.u32(0); c.name("n")
        c.body += [UInt8](repeating: 0, count: 7)   // pad the name to 8
        c.body += [16, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0]  // fuse_ext_header + supp groups
        guard case .create(let name, _, _, _, _) = try decode(c.message(.create, extLength: 2)).operation else { return XCTFail() }
        XCTAssertEqual(name, [0x6e])
    }
}
