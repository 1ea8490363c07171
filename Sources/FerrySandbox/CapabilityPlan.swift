import FerrySystem

/// The capabilities a root-run server keeps after set-up, each for a feature that is on; every
/// other capability leaves the effective, permitted, inheritable, ambient and bounding sets.
/// README.md ("Sandbox, seccomp and capabilities") has the same table.
public struct CapabilityPlan: Sendable {
    /// What the server runs with, where it changes the plan.
    public struct Features: Sendable {
        /// Requests run with their callers' fsuid/fsgid/groups (a root server).
        public var credentialSwitching = true
        /// Inodes are kept as file handles (`--inode-file-handles prefer|mandatory`).
        public var fileHandles = true
        /// FUSE passthrough may register backing files (FUSE_DEV_IOC_BACKING_OPEN).
        public var passthrough = false
        /// fanotify watches whole file systems (and marks the ones reached later).
        public var fanotifyFilesystems = false
        public init() {}
    }

    /// A kept capability and why.
    public struct Entry: Sendable {
        public let capability: Capability
        public let reason: String
    }

    /// The capabilities kept, with reasons.
    public let entries: [Entry]

    public init(_ features: Features) {
        var entries: [Entry] = []
        func keep(_ capability: Capability, _ reason: String) { entries.append(Entry(capability: capability, reason: reason)) }
        if features.credentialSwitching {
            keep(.setuid, "setfsuid to each caller's uid")
            keep(.setgid, "setfsgid and setgroups to each caller's gid and groups")
            // A caller running as root gets root's powers on SOURCE, as on the host: the kernel
            // grants these to an fsuid-0 thread only if Ferry still has them.
            keep(.chown, "chown by root callers, and changing a file's group to one the caller is in")
            keep(.dacOverride, "root callers read, write and search regardless of modes")
            keep(.dacReadSearch, "root callers read and search regardless of modes; open_by_handle_at (inodes as file handles)")
            keep(.fowner, "root callers chmod, utimes, set ACLs and flags on files they do not own; O_NOATIME")
            keep(.fsetid, "root callers keep set-id bits when writing and chmod to groups they are not in")
            keep(.mknod, "root callers create device nodes (MKNOD)")
            keep(.setfcap, "root callers set file capabilities (security.capability)")
            keep(.linuxImmutable, "root callers set the immutable and append-only flags (FS_IOC_SETFLAGS, chattr +i/+a)")
        } else if features.fileHandles {
            keep(.dacReadSearch, "open_by_handle_at (inodes as file handles)")
        }
        if features.passthrough {
            keep(.sysAdmin, "FUSE passthrough: FUSE_DEV_IOC_BACKING_OPEN registers backing files")
        } else if features.fanotifyFilesystems {
            keep(.sysAdmin, "fanotify marks on whole file systems (SOURCE's and those mounted below it later)")
        }
        self.entries = entries
    }

    /// The kept set as bits.
    public var bits: UInt64 { entries.reduce(0) { $0 | $1.capability.bit } }
}
