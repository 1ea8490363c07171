import Foundation
import XCTest

/// Every FUSE operation through a real mount, compared with the same operation on a plain host
/// directory of the same file system (Tests/FerryIntegrationTests/scripts/fscheck.py).
final class PassthroughChecksTests: XCTestCase {
    nonisolated(unsafe) static var server: FerryServer?
    nonisolated(unsafe) static var native = ""

    override class func setUp() {
        super.setUp()
        server = try? FerryServer()
        native = (try? Scratch.directory("ferry-native", lifetime: .wholeRun)) ?? "/nonexistent"
    }

    override class func tearDown() {
        if let server { XCTAssertEqual(server.stop(), 0, "ferry did not exit cleanly: \(server.log)") }
        server = nil
        super.tearDown()
    }

    /// Runs one check of one group and asserts it passed.
    func check(_ group: String, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let server = Self.server else { throw TestFailure("ferry did not start") }
        let result = try runCommand(["python3", script("fscheck.py"), Self.native, server.mountpoint, server.source, group, name])
        print(result.output, terminator: "")
        XCTAssertTrue(result.output.contains("PASS \(name)"), "\(group)/\(name) did not pass:\n\(result.output)", file: file, line: line)
        XCTAssertEqual(result.status, 0, file: file, line: line)
    }

    func testFilesReadWriteAppendTruncate() throws { try check("basic", "files_read_write_append_truncate") }
    func testDirectories() throws { try check("basic", "directories_and_rmdir") }
    func testRenameFlags() throws { try check("basic", "rename_flags") }
    func testHardLinks() throws { try check("basic", "hard_links_share_a_node") }
    func testSpecialFiles() throws { try check("basic", "symlinks_fifos_sockets_devices") }
    func testAttributes() throws { try check("basic", "attributes_chmod_chown_utimes") }
    func testXattrs() throws { try check("basic", "xattrs") }
    func testStatfs() throws { try check("basic", "statfs_matches_host") }
    func testSparseFileAndSeekDataHole() throws { try check("basic", "sparse_file_past_4gib_and_seek_data_hole") }
    func testFallocate() throws { try check("basic", "fallocate_modes") }
    func testCopyFileRange() throws { try check("basic", "copy_file_range_between_files") }
    func testTmpfile() throws { try check("basic", "tmpfile_and_linkat") }
    func testUnlinkedOpenFile() throws { try check("basic", "unlinked_open_file_keeps_working") }
    func testIoctl() throws { try check("basic", "ioctl_inode_flags") }
    func testAccess() throws { try check("basic", "access_checks") }
    func testDirectoryOf20000Entries() throws { try check("basic", "directory_of_20000_entries") }
    func testHostAndMountCoherent() throws { try check("basic", "host_and_mount_see_each_other") }

    func testNewFilesBelongToCaller() throws { try check("perms", "new_files_belong_to_the_caller") }
    func testPermissionDenied() throws { try check("perms", "permission_denied_like_the_host") }
    func testChownRules() throws { try check("perms", "chown_to_supplementary_group_only") }
    func testStickyAndSetgid() throws { try check("perms", "sticky_and_setgid_directories") }
    func testWriteClearsSuid() throws { try check("perms", "write_clears_suid_sgid") }
    func testTruncateAndUtimeRights() throws { try check("perms", "truncate_and_utime_need_rights") }

    func testDotDotAtRoot() throws { try check("escape", "dotdot_at_the_root_stays_inside") }
    func testReplacedDirectory() throws { try check("escape", "replaced_directory_does_not_redirect_writes") }
    func testLinksAndRenamesCannotLeave() throws { try check("escape", "links_and_renames_cannot_leave") }
    func testSymlinksNotFollowed() throws { try check("escape", "symlinks_are_not_followed_on_the_host") }
}
