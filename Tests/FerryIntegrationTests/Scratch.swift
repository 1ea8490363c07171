import Foundation
import Synchronization
import XCTest

/// Scratch directories on the host's disk (under $FERRY_TEST_DIR, default /var/tmp).
///
/// A directory made while a test runs belongs to that test. When that test passes, the directory
/// is removed as soon as the test ends, or at process exit if something is still mounted below it
/// then (exit detaches those mounts first). When the test fails, the directory is kept and its
/// path printed, for the ferry.log inside. A directory made outside any test (in a class's
/// setUp) or asked for with `lifetime: .wholeRun` (a helper built once and shared by later
/// tests) is removed at exit. FERRY_KEEP_SCRATCH=1 keeps every directory.
enum Scratch {
    /// How long a scratch directory is needed.
    enum Lifetime {
        /// Until the test that made it ends (until exit when made outside any test).
        case test
        /// Until the process exits.
        case wholeRun
    }

    static func directory(_ prefix: String, lifetime: Lifetime = .test) throws -> String {
        let base = ProcessInfo.processInfo.environment["FERRY_TEST_DIR"] ?? "/var/tmp"
        let template = "\(base)/\(prefix).XXXXXX"
        var bytes = Array(template.utf8CString)
        guard mkdtemp(&bytes) != nil else { throw TestFailure("mkdtemp failed") }
        let path = String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        ScratchJanitor.shared.adopt(path, untilExit: lifetime == .wholeRun)
        return path
    }
}

/// Removes the scratch directories of passed tests (see `Scratch`); an XCTest observer.
final class ScratchJanitor: NSObject, XCTestObservation, Sendable {
    static let shared: ScratchJanitor = {
        let janitor = ScratchJanitor()
        XCTestObservationCenter.shared.addTestObserver(janitor)
        atexit { ScratchJanitor.shared.removeLeftovers() }
        return janitor
    }()

    private struct Directories {
        /// Made since the last test ended: they belong to the test that runs now.
        var current: [String] = []
        /// Of passed tests, still holding a mount when their test ended, and those made for
        /// the whole run or outside any test.
        var atExit: [String] = []
        /// Whether a test case runs now (between its start and end). The janitor registers on
        /// first use, which is usually inside a test, hence true to begin with.
        var aTestRuns = true
    }
    private let directories = Mutex(Directories())
    private let keepAll = ProcessInfo.processInfo.environment["FERRY_KEEP_SCRATCH"] == "1"

    func adopt(_ path: String, untilExit: Bool) {
        directories.withLock { dirs in
            if untilExit || !dirs.aTestRuns { dirs.atExit.append(path) } else { dirs.current.append(path) }
        }
    }

    func testCaseWillStart(_ testCase: XCTestCase) { directories.withLock { $0.aTestRuns = true } }

    func testCaseDidFinish(_ testCase: XCTestCase) {
        let made = directories.withLock { dirs in
            defer { dirs.current = []; dirs.aTestRuns = false }
            return dirs.current
        }
        guard !made.isEmpty, !keepAll else { return }
        if let run = testCase.testRun, !run.hasSucceeded {
            print("\(testCase.name): kept its scratch directories: \(made.joined(separator: " "))")
            return
        }
        for path in made {
            if Self.mounts(below: path).isEmpty {
                Self.remove(path)
            } else {
                directories.withLock { $0.atExit.append(path) }
            }
        }
    }

    /// At exit: directories whose mounts outlived their test, and those kept for the whole run.
    private func removeLeftovers() {
        guard !keepAll else { return }
        let leftovers = directories.withLock { $0.atExit + $0.current }
        for path in leftovers {
            for mountpoint in Self.mounts(below: path).reversed() { umount2(mountpoint, Int32(MNT_DETACH)) }
            Self.remove(path)
        }
    }

    /// Mount points at or below `path`, outermost first.
    private static func mounts(below path: String) -> [String] {
        guard let table = procText("/proc/self/mounts") else { return [] }
        return table.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 1 else { return nil }
            // /proc/self/mounts escapes blanks in paths as octal; scratch paths have none.
            let mountpoint = String(fields[1])
            return mountpoint == path || mountpoint.hasPrefix(path + "/") ? mountpoint : nil
        }
    }

    private static func remove(_ path: String) {
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch CocoaError.fileNoSuchFile {
            // Already gone.
        } catch {
            print("scratch directory \(path) not removed: \(error)")
        }
    }
}
