import FerrySystem

/// The `-o OPT[,OPT...]` lists of one command line, sorted into the standard mount options
/// (applied to the FUSE mount and to how Ferry reaches SOURCE), Ferry's own options (`cache=always`,
/// the long options without their dashes) and the generic ones mount(8) and fstab pass along,
/// which Ferry accepts and ignores. Later options override earlier ones; the atime options
/// combine as mount(2) combines them (strictatime over noatime over relatime).
struct MountOptionList: Equatable {
    /// `ro` (true) or `rw` (false); nil when neither was given.
    var readOnly: Bool?
    var noSuid = false
    var noDev = false
    var noExec = false
    /// The atime mode asked for, nil when none (SOURCE's own mount decides).
    var atime: AtimeMode?
    var noDirAtime = false
    /// `sync` and `dirsync`, passed to the FUSE mount (the kernel then syncs writes or
    /// directory changes before returning).
    var sync = false
    var dirSync = false
    /// `remount`: change a running mount (mount(8) sends it for `mount -o remount,...`).
    var remount = false
    /// Ferry's own options in order, with dashes for underscores (`inode-file-handles`).
    var ferry: [FerryOption] = []
    /// Options of the FUSE file system itself that mount(8) copies from /proc/mounts into a
    /// remount (`user_id=0`, `default_permissions`, ...); accepted only with `remount`.
    var kernelOptions: [String] = []

    /// One of Ferry's own options: `name` or `name=value`.
    struct FerryOption: Equatable {
        let name: String
        let value: String?
    }

    /// Ferry's own options that take a value, and those that are flags (the long options of
    /// `ferry serve`, plus `allow_other` as FUSE spells it).
    static let valued: Set<String> = ["cache", "passthrough", "transport", "threads", "inode-file-handles", "notify-watcher",
                                      "notify-ring-size", "log-level", "log-file", "io-engine", "io-depth",
                                      "translate-uid", "translate-gid", "max-inodes", "max-open-files",
                                      "max-lock-waiters", "rlimit-nofile",
                                      "sandbox", "seccomp"]
    static let flags: Set<String> = ["writeback", "readonly", "no-xattr", "no-posix-locks", "no-flock",
                                     "allow-other", "no-allow-other", "notify", "no-notify", "stats",
                                     "idmapped-mounts"]
    /// Generic options that change nothing for Ferry (mount(8), fstab and systemd bookkeeping,
    /// or the defaults spelled out).
    static let ignored: Set<String> = ["defaults", "auto", "noauto", "user", "nouser", "users", "owner",
                                       "group", "nofail", "_netdev", "default_permissions"]
    /// FUSE file-system options that appear in /proc/mounts (set by libfuse at mount time).
    static let kernelValued: Set<String> = ["user_id", "group_id", "rootmode", "fd", "max_read", "blksize"]

    init() {}

    /// Parses each `-o` argument in order.
    init(_ lists: [String]) throws(OptionError) {
        var noatime = false, strict = false, relatime = false
        for list in lists {
            for option in MountOptionList.split(list) where !option.isEmpty {
                let (name, value) = MountOptionList.nameAndValue(option)
                switch name {
                case "ro": readOnly = true
                case "rw": readOnly = false
                case "nosuid": noSuid = true
                case "suid": noSuid = false
                case "nodev": noDev = true
                case "dev": noDev = false
                case "noexec": noExec = true
                case "exec": noExec = false
                case "noatime": noatime = true
                case "atime": noatime = false
                case "strictatime": strict = true
                case "nostrictatime": strict = false
                case "relatime": relatime = true
                case "norelatime": relatime = false
                case "nodiratime": noDirAtime = true
                case "diratime": noDirAtime = false
                case "sync": sync = true
                case "async": sync = false
                case "dirsync": dirSync = true
                case "remount": remount = true
                default:
                    if MountOptionList.ignored.contains(name) || name.hasPrefix("x-") || name == "comment" { continue }
                    if MountOptionList.kernelValued.contains(name) {
                        kernelOptions.append(option)
                        continue
                    }
                    let ferryName = String(name.map { $0 == "_" ? "-" : $0 })
                    if MountOptionList.valued.contains(ferryName) {
                        guard let value, !value.isEmpty else { throw OptionError("mount option \(name) needs a value (\(name)=...)") }
                        ferry.append(FerryOption(name: ferryName, value: value))
                    } else if MountOptionList.flags.contains(ferryName) {
                        guard value == nil else { throw OptionError("mount option \(name) takes no value") }
                        ferry.append(FerryOption(name: ferryName, value: nil))
                    } else {
                        throw OptionError("unknown mount option '\(option)'")
                    }
                }
            }
        }
        if strict { atime = .strictatime } else if noatime { atime = .noatime } else if relatime { atime = .relatime }
        if !remount, let first = kernelOptions.first {
            throw OptionError("mount option '\(first)' is set by Ferry itself; it is accepted only with remount")
        }
    }

    /// Whether Ferry has to reach SOURCE through a mount of its own (an atime option).
    var changesHostAccess: Bool { atime != nil || noDirAtime }

    /// Splits at commas not escaped with a backslash (libfuse's own escaping).
    static func split(_ list: String) -> [String] {
        var parts: [String] = [], current = "", escaped = false
        for character in list {
            if escaped { current.append(character); escaped = false; continue }
            if character == "\\" { escaped = true; continue }
            if character == "," { parts.append(current); current = ""; continue }
            current.append(character)
        }
        parts.append(current)
        return parts
    }

    private static func nameAndValue(_ option: String) -> (String, String?) {
        guard let equals = option.firstIndex(of: "=") else { return (option, nil) }
        return (String(option[..<equals]), String(option[option.index(after: equals)...]))
    }
}

/// A `-o` list Ferry cannot take; the message names the option.
struct OptionError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
