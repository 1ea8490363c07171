/// Conversions between the kernel's 32-bit "new" device encoding (used by FUSE for rdev) and
/// glibc's 64-bit dev_t.
public enum DeviceNumber {
    /// dev_t from major and minor (glibc's gnu_dev_makedev).
    public static func make(major: UInt32, minor: UInt32) -> UInt64 {
        let ma = UInt64(major), mi = UInt64(minor)
        return ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
    }

    /// Major and minor of a dev_t (glibc's gnu_dev_major and gnu_dev_minor).
    public static func split(_ dev: UInt64) -> (major: UInt32, minor: UInt32) {
        (UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))),
         UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))))
    }

    /// FUSE's 32-bit encoding (new_encode_dev) of major/minor.
    public static func encode32(major: UInt32, minor: UInt32) -> UInt32 {
        (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)
    }

    /// Major and minor from FUSE's 32-bit encoding (new_decode_dev).
    public static func decode32(_ dev: UInt32) -> (major: UInt32, minor: UInt32) {
        ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
    }
}
