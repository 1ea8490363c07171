import ArgumentParser
import Glibc

/// `ferry virtiofsd ...` (or Ferry run under a name ending in `virtiofsd`): the command line of
/// virtiofsd, as libvirt's `<filesystem type='mount'><driver type='virtiofs'/>` runs its
/// `<binary path=.../>`, translated into `ferry serve SOURCE --fd N` / `--socket-path P`. A real
/// libvirtd (9.0, Debian 12; LibvirtGuestTests) runs it as `--fd=N -o source=DIR[,cache=none|always]
/// [,sandbox=MODE][,xattr|no_xattr][,flock|no_flock][,posix_lock|no_posix_lock]
/// [--thread-pool-size=N] [-d]` (a comma in DIR doubled).
///
/// Accepted: `--fd=N`, `--socket-path=P`, `-o source=DIR,cache=none|never|auto|always,xattr,
/// no_xattr,flock,no_flock,posix_lock,no_posix_lock,writeback,no_writeback,sandbox=...,
/// announce_submounts,readdirplus,no_readdirplus,log_level=...`, `--thread-pool-size=N`, `-d`,
/// `--debug`, `-f`, `--syslog`, `--print-capabilities`; Rust virtiofsd's `--shared-dir=DIR`,
/// `--cache=MODE`, `--xattr`, `--sandbox=namespace|chroot|none`, `--seccomp=kill|log|trap|none`
/// (both passed on to `ferry serve`), `--announce-submounts`, `--translate-uid=RULE`,
/// `--translate-gid=RULE` (the same rules as `ferry serve`'s), `--rlimit-nofile=N` (RLIMIT_NOFILE,
/// which also sizes the default resource bounds). Options Ferry cannot honour
/// (xattrmap, `--uid-map`/`--gid-map` user namespaces, a cache mode `metadata`) are refused with
/// one line. Where virtiofsd defaults differ (it keeps locks and xattrs off unless asked), Ferry
/// keeps its own defaults (host locks and xattrs on) and honours the explicit `no_` forms.
struct Virtiofsd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtiofsd",
        abstract: "Serve a VM with virtiofsd's command line (what libvirt runs); see ferry serve --socket-path.")

    @Argument(parsing: .captureForPassthrough, help: "virtiofsd's options.")
    var arguments: [String] = []

    /// What `--print-capabilities` prints: the vhost-user back-end description
    /// (QEMU docs/interop/vhost-user.rst, "Backend program conventions").
    static let capabilities = "{\n  \"type\": \"fs\",\n  \"features\": []\n}"

    func run() throws {
        do {
            guard let serveArguments = try Virtiofsd.translate(arguments) else {
                print(Virtiofsd.capabilities)
                return
            }
            let serve = try Serve.parse(serveArguments)
            try serve.validate()
            try serve.run()
        } catch let error as VirtiofsdError {
            printError("ferry virtiofsd: \(error.message)")
            throw ExitCode(2)
        } catch let error as ExitCode {
            throw error
        } catch {
            printError("ferry virtiofsd: \(Serve.message(for: error))")
            throw ExitCode(2)
        }
    }

    struct VirtiofsdError: Error { let message: String }

    /// Splits an `-o` list at single commas; a doubled comma is a comma inside a value (libvirt
    /// escapes a comma in `source=` that way).
    static func splitOptions(_ list: String) -> [String] {
        var out: [String] = [], current = ""
        var chars = Array(list)[...]
        while let c = chars.popFirst() {
            if c == "," {
                if chars.first == "," { chars.removeFirst(); current.append(",") } else { out.append(current); current = "" }
            } else {
                current.append(c)
            }
        }
        out.append(current)
        return out
    }

    /// The `ferry serve` arguments for a virtiofsd command line; nil for --print-capabilities.
    static func translate(_ arguments: [String]) throws -> [String]? {
        var source: String?
        var transport: [String] = []
        var options: [String] = []
        var i = 0
        func value(_ arg: String, _ name: String) throws -> String {
            if arg.hasPrefix(name + "=") { return String(arg.dropFirst(name.count + 1)) }
            i += 1
            guard i < arguments.count else { throw VirtiofsdError(message: "\(name) needs a value") }
            return arguments[i]
        }
        func cache(_ mode: String) throws -> [String] {
            switch mode {
            case "none", "never": return ["--cache", "never"]
            case "auto": return ["--cache", "auto"]
            case "always": return ["--cache", "always"]
            default: throw VirtiofsdError(message: "cache=\(mode) is not supported (none, never, auto, always)")
            }
        }
        func subOptions(_ list: String) throws {
            for option in Virtiofsd.splitOptions(list) where !option.isEmpty {
                let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
                let name = parts[0], setting = parts.count > 1 ? parts[1] : nil
                switch (name, setting) {
                case ("source", let dir?): source = dir
                case ("cache", let mode?): options += try cache(mode)
                case ("xattr", nil), ("flock", nil), ("posix_lock", nil), ("no_writeback", nil): break
                case ("no_xattr", nil): options.append("--no-xattr")
                case ("no_flock", nil): options.append("--no-flock")
                case ("no_posix_lock", nil): options.append("--no-posix-locks")
                case ("writeback", nil): options.append("--writeback")
                case ("sandbox", let mode?): options += ["--sandbox", mode]
                case ("announce_submounts", nil), ("readdirplus", nil), ("no_readdirplus", nil),
                     ("allow_direct_io", nil), ("no_allow_direct_io", nil), ("killpriv_v2", nil), ("no_killpriv_v2", nil),
                     ("timeout", _?), ("modcaps", _?): break
                case ("log_level", let level?): options += ["--log-level", level == "warn" ? "warning" : level]
                default: throw VirtiofsdError(message: "-o \(option) is not supported by Ferry")
                }
            }
        }
        while i < arguments.count {
            let arg = arguments[i]
            switch arg {
            case "--print-capabilities": return nil
            case "-d", "--debug": options += ["--log-level", "debug"]
            case "-f", "--syslog", "--announce-submounts", "--xattr", "--posix-acl", "--no-killpriv-v2", "--killpriv-v2",
                 "--allow-direct-io", "--no-readdirplus": break
            case "-o": i += 1; guard i < arguments.count else { throw VirtiofsdError(message: "-o needs a value") }; try subOptions(arguments[i])
            default:
                if arg.hasPrefix("-o") && arg.count > 2 { try subOptions(String(arg.dropFirst(2))) }
                else if arg == "--fd" || arg.hasPrefix("--fd=") { transport = ["--fd", try value(arg, "--fd")] }
                else if arg == "--socket-path" || arg.hasPrefix("--socket-path=") { transport = ["--socket-path", try value(arg, "--socket-path")] }
                else if arg == "--shared-dir" || arg.hasPrefix("--shared-dir=") { source = try value(arg, "--shared-dir") }
                else if arg == "--cache" || arg.hasPrefix("--cache=") { options += try cache(try value(arg, "--cache")) }
                else if arg == "--translate-uid" || arg.hasPrefix("--translate-uid=") { options += ["--translate-uid", try value(arg, "--translate-uid")] }
                else if arg == "--translate-gid" || arg.hasPrefix("--translate-gid=") { options += ["--translate-gid", try value(arg, "--translate-gid")] }
                else if arg == "--rlimit-nofile" || arg.hasPrefix("--rlimit-nofile=") { options += ["--rlimit-nofile", try value(arg, "--rlimit-nofile")] }
                else if arg == "--thread-pool-size" || arg.hasPrefix("--thread-pool-size=") { _ = try value(arg, "--thread-pool-size") }
                else if arg == "--sandbox" || arg.hasPrefix("--sandbox=") { options += ["--sandbox", try value(arg, "--sandbox")] }
                else if arg == "--seccomp" || arg.hasPrefix("--seccomp=") { options += ["--seccomp", try value(arg, "--seccomp")] }
                else if arg == "--socket-group" || arg.hasPrefix("--socket-group=")
                            || arg == "--log-level" || arg.hasPrefix("--log-level=") {
                    let v = try value(arg, arg.split(separator: "=")[0].description)
                    if arg.hasPrefix("--log-level") { options += ["--log-level", v == "warn" ? "warning" : v] }
                } else {
                    throw VirtiofsdError(message: "\(arg) is not supported by Ferry")
                }
            }
            i += 1
        }
        guard let source else { throw VirtiofsdError(message: "no shared directory: give -o source=DIR (or --shared-dir=DIR)") }
        guard !transport.isEmpty else { throw VirtiofsdError(message: "give --fd=N or --socket-path=PATH") }
        return [source] + transport + options
    }
}
