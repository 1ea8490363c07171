import CFerrySys
import Glibc

/// Child processes and pipes, for `ferry SOURCE MOUNTPOINT` putting its server in the background
/// without fork() (a multithreaded Swift process must not fork).
public enum HostProcess {
    /// The executable of the running process.
    public static let selfExecutable = "/proc/self/exe"

    /// pipe2(2) with O_CLOEXEC: (read end, write end).
    public static func pipe() throws(Errno) -> (read: OwnedFD, write: OwnedFD) {
        var ends: [Int32] = [-1, -1]
        _ = try checked { ferry_pipe_cloexec(&ends) }
        return (OwnedFD(ends[0]), OwnedFD(ends[1]))
    }

    /// posix_spawn(2)s `path` with `arguments` (argv[0] included) and the current environment.
    /// `descriptors` maps a child descriptor number to a descriptor of this process (dup2'd, so
    /// it stays open across exec); everything else with O_CLOEXEC is closed. `newSession`
    /// starts a session of its own (setsid), `directory` is the child's working directory.
    public static func spawn(_ path: String, arguments: [String], descriptors: [Int32: Int32],
                             newSession: Bool, directory: String?) throws(Errno) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, source) in descriptors.sorted(by: { $0.key < $1.key }) {
            posix_spawn_file_actions_adddup2(&actions, source, target)
        }
        if let directory { ferry_spawn_addchdir(&actions, directory) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Default signal dispositions and an empty mask: the parent may block signals for its
        // signal thread.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        let setsid: Int32 = 0x80   // POSIX_SPAWN_SETSID
        let spawnFlags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK) | (newSession ? setsid : 0)
        posix_spawnattr_setflags(&attributes, Int16(spawnFlags))
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        if result != 0 { throw Errno(rawValue: result) }
        return pid
    }

    /// Runs `program` (looked up in PATH) with `arguments` (argv[0] included) and waits for it;
    /// false if it could not start or did not exit 0.
    @discardableResult
    public static func runSearchingPath(_ program: String, arguments: [String]) -> Bool {
        var pid = pid_t()
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawnp(&pid, program, nil, nil, argv, environ) == 0 else { return false }
        return (try? wait(pid)) == .exited(0)
    }

    /// How a child ended.
    public enum Ending: Sendable, Equatable {
        case exited(Int32)
        case signalled(Int32)
    }

    /// waitpid(2) until `pid` ends.
    public static func wait(_ pid: pid_t) throws(Errno) -> Ending {
        var status: Int32 = 0
        _ = try retrying { waitpid(pid, &status, 0) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which are macros.
        if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
        return .signalled(status & 0x7f)
    }

    /// Reads `fd` until end of file (at most `limit` bytes).
    public static func readAll(_ fd: Int32, limit: Int = 65536) throws(Errno) -> [UInt8] {
        var collected: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while collected.count < limit {
            let n = try retrying { chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
            if n == 0 { break }
            collected += chunk[0..<n]
        }
        return collected
    }

    /// Writes all of `bytes` to `fd`.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(Errno) {
        var offset = 0
        while offset < bytes.count {
            let n = try retrying { bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
            offset += n
        }
    }

    /// Sets FD_CLOEXEC on `fd`, so programs this process starts do not inherit it.
    public static func setCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// Points descriptor `target` at `path` opened with `flags` (e.g. stderr at a log file).
    public static func redirect(_ target: Int32, to path: String, flags: Int32) throws(Errno) {
        let fd = try Host.openat(HostFlags.atFDCWD, CName(path), flags: flags, mode: 0o644)
        defer { if fd != target { Host.close(fd) } }
        if fd != target { _ = try retrying { dup2(fd, target) } }
    }
}
