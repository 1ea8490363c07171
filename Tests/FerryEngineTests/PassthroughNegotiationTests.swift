import FerryEngine
import FerryFS
import FerryProtocol
import Foundation
import Logging
import XCTest

/// INIT with FUSE passthrough: the flag (flags2 bit 5) and max_stack_depth 1 only when asked
/// for, offered by the kernel, and not combined with the writeback cache.
final class PassthroughNegotiationTests: XCTestCase {
    /// Sends INIT (7.45, INIT_EXT, `flags`) to an engine with `options`; returns the reply's
    /// flags (both words) and max_stack_depth.
    private func negotiate(_ options: EngineOptions, kernel flags: InitFlags) throws -> (InitFlags, UInt32) {
        let source = try Scratch.engineDirectory()
        defer { try? FileManager.default.removeItem(atPath: source) }
        let logger = Logger(label: "test")
        let engine = FUSEEngine(fs: try PassthroughFS(source: source, options: FSOptions(), logger: logger),
                                options: options, logger: logger)
        let worker = engine.makeWorker()
        var body: [UInt8] = []
        let flags = flags.union(.initExt).rawValue
        for word in [7, 45, 65536, UInt32(truncatingIfNeeded: flags), UInt32(flags >> 32)] + [UInt32](repeating: 0, count: 11) {
            body += withUnsafeBytes(of: UInt32(word).littleEndian, Array.init)
        }
        var header: [UInt8] = []
        for (value, size) in [(UInt64(40 + body.count), 4), (26, 4), (1, 8), (0, 8), (0, 4), (0, 4), (0, 4), (0, 4)] {
            header += withUnsafeBytes(of: value.littleEndian, Array.init).prefix(size)
        }
        let request = header + body
        let result = request.withUnsafeBytes { engine.handle(ByteView($0), worker: worker) }
        guard case let .reply(reply) = result else { throw TestError("INIT got no reply") }
        XCTAssertEqual(reply.load(Int32.self, at: 4), 0)
        let low = UInt64(reply.load(UInt32.self, at: 16 + 12)!)
        let high = UInt64(reply.load(UInt32.self, at: 16 + 32)!)
        return (InitFlags(rawValue: low | high << 32), reply.load(UInt32.self, at: 16 + 36)!)
    }

    /// FUSE_OVER_IO_URING (flags2 bit 9): asked for only with `overIOUring`, and only when offered.
    func testOverIOUringOnlyWhenAskedForAndOffered() throws {
        var options = EngineOptions()
        options.overIOUring = true
        XCTAssertTrue(try negotiate(options, kernel: [.overIOUring]).0.contains(.overIOUring))
        XCTAssertFalse(try negotiate(options, kernel: []).0.contains(.overIOUring))
        XCTAssertFalse(try negotiate(EngineOptions(), kernel: [.overIOUring]).0.contains(.overIOUring))
        XCTAssertEqual(InitFlags.overIOUring.rawValue, 1 << 41)
    }

    func testPassthroughIsAskedForWithStackDepthOne() throws {
        var options = EngineOptions()
        options.passthrough = true
        let (flags, depth) = try negotiate(options, kernel: [.passthrough, .asyncRead])
        XCTAssertTrue(flags.contains(.passthrough))
        XCTAssertEqual(depth, 1)
    }

    func testNoPassthroughWhenTheKernelDoesNotOfferIt() throws {
        var options = EngineOptions()
        options.passthrough = true
        let (flags, depth) = try negotiate(options, kernel: [.asyncRead])
        XCTAssertFalse(flags.contains(.passthrough))
        XCTAssertEqual(depth, 0)
    }

    func testNoPassthroughWithTheWritebackCacheOrWhenOff() throws {
        var writeback = EngineOptions()
        writeback.passthrough = true
        writeback.writebackCache = true
        let (flags, depth) = try negotiate(writeback, kernel: [.passthrough, .writebackCache])
        XCTAssertFalse(flags.contains(.passthrough))
        XCTAssertTrue(flags.contains(.writebackCache))
        XCTAssertEqual(depth, 0)
        let (off, _) = try negotiate(EngineOptions(), kernel: [.passthrough])
        XCTAssertFalse(off.contains(.passthrough))
    }

    /// Symlink targets are cached by the kernel wherever it caches at all (they never change).
    func testSymlinksAreCachedUnlessCachingIsOff() throws {
        for (mode, expected) in [(CacheMode.never, false), (.auto, true), (.always, true)] {
            var options = EngineOptions()
            options.cache = mode
            let (flags, _) = try negotiate(options, kernel: [.cacheSymlinks, .handleKillprivV2])
            XCTAssertEqual(flags.contains(.cacheSymlinks), expected, "\(mode)")
            XCTAssertTrue(flags.contains(.handleKillprivV2))
        }
        let (flags, _) = try negotiate(EngineOptions(), kernel: [])
        XCTAssertFalse(flags.contains(.cacheSymlinks), "only when the kernel offers it")
    }
}

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum Scratch {
    static func engineDirectory() throws -> String {
        var bytes = Array("/var/tmp/ferry-engine.XXXXXX".utf8CString)
        guard mkdtemp(&bytes) != nil else { throw TestError("mkdtemp failed") }
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

}
