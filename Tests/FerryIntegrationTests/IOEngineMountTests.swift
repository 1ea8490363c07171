import Foundation
import XCTest

/// The I/O core through a real mount (without passthrough, so Ferry itself moves the data): the
/// io_uring engine keeps many data requests of one reader thread in flight, the sync engine one
/// at a time, and fio's verified random writes and reads come out clean through both.
final class IOEngineMountTests: XCTestCase {
    /// The most data requests that were in flight at once, from the debug log: a request is in
    /// flight from its "in flight" line to its "(I/O core)" completion line.
    private func peakInFlight(_ log: String) -> Int {
        var current = 0, peak = 0
        for line in log.split(separator: "\n") {
            if line.hasSuffix("-> in flight") { current += 1; peak = max(peak, current) }
            else if line.hasSuffix("(I/O core)") { current -= 1 }
        }
        return peak
    }

    private func fio(_ mountpoint: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        // --verify_state_save=0: no local-check-N-verify.state left in the working directory.
        try runCommand(["fio", "--name=check", "--directory=\(mountpoint)", "--size=8m", "--bs=4k", "--verify_state_save=0",
                        "--ioengine=io_uring", "--iodepth=32", "--output-format=normal"] + arguments, timeout: 300)
    }

    /// One reader thread, O_DIRECT random reads at depth 32: the kernel sends them concurrently,
    /// and the io_uring engine takes them all before the first completes; the sync engine can hold
    /// only the one it is reading.
    private func peak(engine: String) throws -> Int {
        // /dev/fuse whatever the machine's enable_uring says (each ring queue is a thread too).
        let server = try FerryServer(arguments: ["--passthrough", "never", "--threads", "1", "--io-depth", "32",
                                                 "--io-engine", engine, "--transport", "dev", "--log-level", "debug"])
        defer { server.stop() }
        let result = try fio(server.mountpoint, ["--rw=randread", "--direct=1", "--number_ios=2000"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(server.log.contains(engine == "uring" ? "I/O engine io_uring (" : "I/O engine sync ("), server.log)
        XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly")
        return peakInFlight(server.log)
    }

    func testTheUringEngineKeepsManyRequestsOfOneThreadInFlight() throws {
        let peak = try peak(engine: "uring")
        XCTAssertGreaterThan(peak, 4, "at most \(peak) data request(s) were in flight at once")
        XCTAssertLessThanOrEqual(peak, 32, "more requests in flight than --io-depth")
    }

    func testTheSyncEngineRunsOneRequestPerThreadAtATime() throws {
        XCTAssertEqual(try peak(engine: "sync"), 1)
    }

    /// fio writes random blocks at depth 32 with checksums and reads them back, O_DIRECT and
    /// buffered, through each engine (a mixed-up buffer or reply shows as a verify failure).
    private func verify(engine: String, depth: String, transport: String = "dev") throws {
        let server = try FerryServer(arguments: ["--passthrough", "never", "--io-engine", engine, "--io-depth", depth,
                                                 "--transport", transport])
        defer { server.stop() }
        for direct in ["1", "0"] {
            let result = try fio(server.mountpoint, ["--rw=randwrite", "--direct=\(direct)", "--verify=crc32c",
                                                     "--verify_fatal=1", "--do_verify=1", "--numjobs=2"])
            XCTAssertEqual(result.status, 0, "\(engine) direct=\(direct): \(result.output)")
            XCTAssertFalse(result.output.contains("verify: bad"), "\(engine) direct=\(direct): \(result.output)")
        }
        XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly: \(server.log)")
    }

    func testVerifiedRandomWritesThroughTheUringEngine() throws { try verify(engine: "uring", depth: "16") }

    /// A depth of 1: every request waits for the one before it on the same thread (a full queue).
    func testVerifiedRandomWritesThroughAFullUringQueue() throws { try verify(engine: "uring", depth: "1") }

    func testVerifiedRandomWritesThroughTheSyncEngine() throws { try verify(engine: "sync", depth: "16") }

    /// Over the FUSE-over-io_uring transport: ring entries wait for the I/O engine's completions.
    func testVerifiedRandomWritesOverTheRingTransport() throws {
        try URingParameter.enable()
        defer { URingParameter.restore() }
        try verify(engine: "uring", depth: "4", transport: "uring")
        try verify(engine: "sync", depth: "4", transport: "uring")
    }
}

/// `ferry serve` picks passthrough and the I/O engine by itself, says why in one start-up
/// line, and `--explain` prints the same decisions without mounting.
final class AutoConfigurationTests: XCTestCase {
    func testExplainPrintsTheDecisionsWithoutMounting() throws {
        let scratch = try Scratch.directory("ferry-explain")
        try FileManager.default.createDirectory(atPath: scratch + "/src", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch + "/mnt", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let result = try runCommand([FerryServer.binary, "serve", "--explain", scratch + "/src", scratch + "/mnt"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("passthrough: on"), result.output)
        XCTAssertTrue(result.output.contains("I/O engine: io_uring"), result.output)
        XCTAssertTrue(result.output.contains("transport: "), result.output)
        XCTAssertFalse(FerryServer.isMounted(scratch + "/mnt"))
        let forced = try runCommand([FerryServer.binary, "serve", "--explain", "--writeback", "--io-engine", "sync",
                                     scratch + "/src", scratch + "/mnt"])
        XCTAssertTrue(forced.output.contains("passthrough: off"), forced.output)
        XCTAssertTrue(forced.output.contains("because --writeback was given"), forced.output)
        XCTAssertTrue(forced.output.contains("I/O engine: sync"), forced.output)
    }

    func testTheStartupLogSaysWhatWasChosenInOneLine() throws {
        let server = try FerryServer()
        defer { server.stop() }
        XCTAssertEqual(server.stop(), 0)
        let lines = server.log.split(separator: "\n").filter { $0.contains("configuration: ") }
        XCTAssertEqual(lines.count, 1, server.log)
        XCTAssertTrue(lines.first?.contains("passthrough on (") ?? false, server.log)
        XCTAssertTrue(lines.first?.contains("I/O engine io_uring (") ?? false, server.log)
    }
}
