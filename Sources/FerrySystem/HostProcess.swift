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

    /// fork(2), for the pid namespace's supervisor only: safe while the process has one
    /// thread (checked by the caller). Returns the child's pid in the parent and 0 in the child.
    public static func forkSingleThreaded() throws(Errno) -> pid_t {
        try checked { ferry_fork() }
    }

    /// Reaps one child of this process that has ended (waitpid(-1, WNOHANG)): which one and
    /// how it ended, or nil when none has.
    public static func reapAny() -> (pid: pid_t, ending: Ending)? {
        var status: Int32 = 0
        let pid = waitpid(-1, &status, WNOHANG)
        guard pid > 0 else { return nil }
        return (pid, ending(ofStatus: status))
    }

    /// A wait status decoded (WIFEXITED / WEXITSTATUS / WTERMSIG, which are macros).
    private static func ending(ofStatus status: Int32) -> Ending {
        status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signalled(status & 0x7f)
    }

    /// Ends this process as `ending` says, at once (no atexit handlers, no buffers flushed):
    /// with the exit status, or killed by the same signal (without a core file).
    public static func endLike(_ ending: Ending) -> Never {
        if case .signalled(let signal) = ending {
            var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
            _ = setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &noCore)
            Glibc.signal(signal, SIG_DFL)
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, signal)
            pthread_sigmask(SIG_UNBLOCK, &set, nil)
            _ = Glibc.raise(signal)
            _exit(128 + signal)
        }
        guard case .exited(let status) = ending else { _exit(1) }
        _exit(status)
    }

    /// Closes every descriptor from `first` up (close_range(2)).
    public static func closeDescriptors(from first: Int32) {
        _ = ferry_close_from(first)
    }

    /// Asks the kernel to send `signal` to this process when its parent exits
    /// (PR_SET_PDEATHSIG), then checks that `parent` (a pidfd of it, taken before the fork)
    /// has not already gone. Returns false if it has.
    public static func followParent(_ parent: Int32, dyingWith signal: Int32) throws(Errno) -> Bool {
        _ = try checked { ferry_prctl(1 /* PR_SET_PDEATHSIG */, UInt(signal), 0) }
        guard parent >= 0 else { return true }
        return ferry_pidfd_exited(parent) == 0
    }

    /// A pidfd of this process (pidfd_open(2)), or -1 where the kernel has none.
    public static func ownPidfd() -> Int32 { ferry_pidfd_open(getpid()) }

    /// waitpid(2) until `pid` ends.
    public static func wait(_ pid: pid_t) throws(Errno) -> Ending {
        var status: Int32 = 0
        _ = try retrying { waitpid(pid, &status, 0) }
        return ending(ofStatus: status)
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
