import ArgumentParser
import FerrySystem
import Glibc

/// `ferry SOURCE MOUNTPOINT [-o OPTS]` (also spelled `ferry mount ...`): what mount(8) runs,
/// through mount.fuse3, for `mount -t fuse.ferry` and fstab lines. It starts `ferry serve` in
/// the background (its own session, working directory /), waits until the mount answers and
/// exits 0, or exits non-zero with the server's one-line error. With `-o remount,...` it
/// changes the running mount instead (see Remount).
struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount SOURCE at MOUNTPOINT and serve it in the background (what mount -t fuse.ferry runs).")

    @Argument(help: "The host directory to share.")
    var source: String

    @Argument(help: "Where to mount it.")
    var mountpoint: String

    @Option(name: .customShort("o"), parsing: .singleValue,
            help: ArgumentHelp("Mount options, as for ferry serve -o (plus remount); log_file=FILE keeps the background server's log.",
                               valueName: "options"))
    var options: [String] = []

    func run() throws {
        let list: MountOptionList
        do { list = try MountOptionList(options) } catch { fail(error.description) }
        if mountpoint.hasPrefix("/dev/fd/") {
            // mount.fuse3's drop_privileges mounts itself and hands over /dev/fd/N.
            fail("drop_privileges is not supported: Ferry mounts itself, and needs root to serve each caller with their own credentials")
        }
        if list.remount {
            do { try Remount.perform(source: source, mountpoint: mountpoint, list: list) }
            catch { fail("\(error)") }
            return
        }
        let serveArguments = [source, mountpoint] + options.flatMap { ["-o", $0] }
        // Checks every option (values included) before anything starts.
        do { _ = try Serve.parse(serveArguments) } catch { fail(Serve.message(for: error)) }
        try startInBackground(serveArguments, quiet: !list.ferry.contains { $0.name == "log-level" || $0.name == "log-file" })
    }

    /// Spawns `ferry serve ... --ready-fd 3` and waits for "R" (ready) or "E" + message on the
    /// pipe; returns once the mount is up, or exits with the server's failure.
    private func startInBackground(_ serveArguments: [String], quiet: Bool) throws {
        var arguments = ["ferry", "serve"] + absolute(serveArguments) + ["--ready-fd", "3"]
        // Nobody reads the log after this command returns: without a log file, say only
        // warnings until then.
        if quiet { arguments += ["--log-level", "warning"] }
        let pid: pid_t
        let readEnd: OwnedFD
        do {
            let pipe = try HostProcess.pipe()
            readEnd = pipe.read
            let devNull = OwnedFD(try Host.openat(HostFlags.atFDCWD, CName("/dev/null"), flags: HostFlags.oRdOnly))
            pid = try HostProcess.spawn(HostProcess.selfExecutable, arguments: arguments,
                                        descriptors: [0: devNull.rawValue, 3: pipe.write.rawValue],
                                        newSession: true, directory: "/")
        } catch {
            fail("cannot start the server: \(error)")
        }
        // Our copy of the write end is closed now (the pipe tuple is gone): end of file means
        // the server has exited or closed it.
        let reply = (try? HostProcess.readAll(readEnd.rawValue)) ?? []
        if reply.first == UInt8(ascii: "R") { return }
        let ending = try? HostProcess.wait(pid)
        if reply.first == UInt8(ascii: "E") {
            printError("ferry: " + String(decoding: reply.dropFirst(), as: UTF8.self))
            if case .exited(let status) = ending, status != 0 { throw ExitCode(status) }
            throw ExitCode(1)
        }
        switch ending {
        case .exited(let status)?: fail("the server exited with status \(status) before the mount was up")
        case .signalled(let signal)?: fail("the server was killed by signal \(signal) before the mount was up")
        case nil: fail("the server ended before the mount was up")
        }
    }

    /// SOURCE and MOUNTPOINT made absolute (the server runs in /).
    private func absolute(_ arguments: [String]) -> [String] {
        var result = arguments
        for index in 0..<2 where !result[index].hasPrefix("/") {
            result[index] = Preflight.resolved(result[index]) ?? result[index]
        }
        return result
    }

    private func fail(_ message: String) -> Never {
        printError("ferry: \(message)")
        Glibc.exit(1)
    }
}
