import FerryFuzz
import Foundation
import XCTest

/// Every committed fuzz input (seeds, and each crash a fuzzer found, kept as a regression input)
/// runs through its target without instrumentation: a crash fails the suite. The fuzzers
/// themselves run in .ci/run for a bounded time (README, "Fuzzing").
final class CorpusReplayTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("corpus")

    /// Runs `body` on a thread of its own: the FUSE target's request worker unshares its
    /// thread's file-system context and sets umask 0 there, which must not reach the test
    /// thread (every later test's child processes would inherit umask 0).
    private static func onOwnThread(_ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        let thread = Thread { body(); done.signal() }
        thread.start()
        done.wait()
    }

    override class func tearDown() {
        onOwnThread { try? FileManager.default.removeItem(atPath: FuzzTarget.fuseScratchDirectory) }
    }

    func testEveryTargetHasACorpusAndRunsIt() throws {
        for target in FuzzTarget.allCases {
            let directory = Self.corpus.appendingPathComponent(target.rawValue)
            let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
            XCTAssertFalse(files.isEmpty, "no corpus for \(target.rawValue) in \(directory.path)")
            for name in files {
                let bytes = try Data(contentsOf: directory.appendingPathComponent(name))
                Self.onOwnThread { bytes.withUnsafeBytes { target.run($0) } }
            }
        }
    }

    /// The FUSE target really serves: a CREATE then WRITE then READ sequence leaves the file
    /// with its bytes in the scratch directory (else the fuzzer would explore nothing).
    func testTheFUSETargetServesRequests() throws {
        let seed = try Data(contentsOf: Self.corpus.appendingPathComponent("fuse-requests/seed-create-write-read"))
        Self.onOwnThread { seed.withUnsafeBytes { FuzzTarget.fuseRequests.run($0) } }
        let mask = umask(0o022)
        umask(mask)
        XCTAssertNotEqual(mask, 0, "the FUSE target's worker left the test thread with umask 0")
        var fileSize = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &fileSize)
        XCTAssertEqual(fileSize.rlim_cur, rlim_t.max, "only the fuzzer limits file sizes (children of the tests inherit it)")
        let written = try String(contentsOfFile: FuzzTarget.fuseScratchDirectory + "/f", encoding: .utf8)
        XCTAssertTrue(written.hasPrefix("hello world"), "scratch file holds \(written.debugDescription)")
    }
}
