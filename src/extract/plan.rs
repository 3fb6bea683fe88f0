//! Which selected members land on one target, found before anything is written (pure). To
//! S3: the versions of one key, restored one after another, oldest first. To a folder: names
//! that map to one path, or to a path under another member's file (refused), and the older
//! versions of one key (not written). The index is never held: a first read keeps an 8-byte
//! fingerprint per member ([`Identities`]), a second keeps only the members whose fingerprints
//! met ([`Identities::involves_key`], [`Identities::involves_path`]), and those are compared
//! exactly here. A fingerprint that meets by chance only costs that exact comparison.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use super::path::{local_path, LocalPath};
use crate::archive::records::IndexRow;

/// A selected index row and its position in the index (counting every row).
#[derive(Debug, Clone)]
pub struct Member {
    pub ordinal: u64,
    pub row: IndexRow,
}

fn fingerprint(text: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The folders above `path`, innermost first.
fn folders_above(path: &Path) -> impl Iterator<Item = &Path> {
    path.ancestors()
        .skip(1)
        .filter(|folder| !folder.as_os_str().is_empty())
}

/// Fingerprints of the selected members' targets, from the first read of the index.
#[derive(Debug, Default)]
pub struct Identities {
    /// S3 keys, or the paths of files.
    targets: Vec<u64>,
    /// Paths of folder markers (keys ending in `/`).
    folders: Vec<u64>,
    /// Every folder above a member's path.
    above: HashSet<u64>,
}

impl Identities {
    pub fn add_key(&mut self, target: &str) {
        self.targets.push(fingerprint(target));
    }

    pub fn add_path(&mut self, path: &LocalPath) {
        match path {
            LocalPath::File(file) => self.targets.push(fingerprint(file)),
            LocalPath::Folder(folder) => self.folders.push(fingerprint(folder)),
        }
        self.above
            .extend(folders_above(path.relative()).map(fingerprint));
    }

    /// The fingerprints that meet: held by more than one member, or a file's that is a folder
    /// above another member. Empty in the usual case.
    pub fn shared(mut self) -> Shared {
        let mut shared: HashSet<u64> = self
            .targets
            .iter()
            .filter(|file| self.above.contains(file))
            .copied()
            .collect();
        let mut all = std::mem::take(&mut self.targets);
        all.append(&mut self.folders);
        all.sort_unstable();
        shared.extend(
            all.windows(2)
                .filter(|pair| pair[0] == pair[1])
                .map(|pair| pair[0]),
        );
        Shared(shared)
    }
}

/// The fingerprints that meet (see [`Identities::shared`]).
#[derive(Debug, Default)]
pub struct Shared(HashSet<u64>);

impl Shared {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the member with S3 target `target` may share it.
    pub fn involves_key(&self, target: &str) -> bool {
        self.0.contains(&fingerprint(target))
    }

    /// Whether the member with local path `path` may share it, or be under another's file.
    pub fn involves_path(&self, path: &LocalPath) -> bool {
        let relative = path.relative();
        self.0.contains(&fingerprint(relative))
            || folders_above(relative).any(|folder| self.0.contains(&fingerprint(folder)))
    }
}

/// Oldest first: by LastModified, then by position in the index (the archive's order). A
/// time that does not parse sorts first.
fn oldest_first(members: &mut [Member]) {
    let time = |m: &Member| {
        aws_sdk_s3::primitives::DateTime::from_str(
            &m.row.last_modified,
            aws_sdk_s3::primitives::DateTimeFormat::DateTime,
        )
        .ok()
        .map(|t| (t.secs(), t.subsec_nanos()))
    };
    members.sort_by_key(|m| (time(m), m.ordinal));
}

/// The members that share an S3 target, by target, each oldest first; members alone on their
/// target are left out.
pub fn version_runs(
    members: Vec<Member>,
    target: impl Fn(&IndexRow) -> String,
) -> Vec<Vec<Member>> {
    let mut by_target: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    for member in members {
        by_target
            .entry(target(&member.row))
            .or_default()
            .push(member);
    }
    by_target
        .into_values()
        .filter(|run| run.len() > 1)
        .map(|mut run| {
            oldest_first(&mut run);
            run
        })
        .collect()
}

/// Members that would land on one local path: the path and their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub path: PathBuf,
    pub names: Vec<String>,
}

/// What goes to a folder, of the members whose fingerprints met.
#[derive(Debug, Default)]
pub struct LocalPlan {
    /// Older versions of a key, not written, each with the member written instead.
    pub older: Vec<(Member, Member)>,
    pub collisions: Vec<Collision>,
}

/// Of the members whose fingerprints met: with `newest_only`, the versions of one member name
/// but the newest are set aside; then any two left on one path, or one under another's file,
/// collide.
pub fn local_plan(members: Vec<Member>, newest_only: bool) -> LocalPlan {
    let mut plan = LocalPlan::default();
    let mut by_name: BTreeMap<String, Vec<Member>> = BTreeMap::new();
    for member in members {
        by_name
            .entry(member.row.member.clone())
            .or_default()
            .push(member);
    }
    let mut by_path: BTreeMap<PathBuf, (bool, Vec<String>)> = BTreeMap::new();
    for (_, mut versions) in by_name {
        let written = if newest_only {
            oldest_first(&mut versions);
            let newest = versions.pop().into_iter().collect::<Vec<_>>();
            if let Some(kept) = newest.first() {
                plan.older
                    .extend(versions.drain(..).map(|older| (older, kept.clone())));
            }
            newest
        } else {
            versions
        };
        for member in written {
            // Unsafe names were refused before; they cannot be here.
            let Ok(path) = local_path(&member.row.member) else {
                continue;
            };
            let is_file = matches!(path, LocalPath::File(_));
            let entry = by_path.entry(path.relative().clone()).or_default();
            entry.0 |= is_file;
            entry.1.push(member.row.member);
        }
    }
    for (path, (is_file, names)) in &by_path {
        let mut names = names.clone();
        if *is_file {
            // Paths under this one follow it in component order.
            names.extend(
                by_path
                    .range::<PathBuf, _>((
                        std::ops::Bound::Excluded(path.clone()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(under, _)| under.starts_with(path))
                    .flat_map(|(_, (_, under))| under.iter().cloned()),
            );
        }
        if names.len() > 1 {
            plan.collisions.push(Collision {
                path: path.clone(),
                names,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ordinal: u64, name: &str, version: &str, modified: &str) -> Member {
        let key = name.split_once('/').map_or(name, |(_, key)| key);
        Member {
            ordinal,
            row: IndexRow {
                bucket: "src".into(),
                key: key.into(),
                member: name.into(),
                version_id: Some(version.into()).filter(|v: &String| !v.is_empty()),
                last_modified: modified.into(),
                ..IndexRow::default()
            },
        }
    }

    fn shared_paths(names: &[&str]) -> Vec<String> {
        let mut identities = Identities::default();
        let paths: Vec<LocalPath> = names
            .iter()
            .map(|n| local_path(n).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for path in &paths {
            identities.add_path(path);
        }
        let shared = identities.shared();
        names
            .iter()
            .zip(&paths)
            .filter(|(_, path)| shared.involves_path(path))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    #[test]
    fn fingerprints_meet_for_one_path_and_for_a_file_above_another_member() {
        assert!(shared_paths(&["s/a", "s/b", "s/c/d", "s/c/"]).is_empty());
        assert_eq!(
            shared_paths(&["s/a/b", "s/a//b", "s/x", "s/a/./b"]),
            ["s/a/b", "s/a//b", "s/a/./b"]
        );
        assert_eq!(shared_paths(&["s/t", "s/t/", "s/u"]), ["s/t", "s/t/"]);
        assert_eq!(
            shared_paths(&["s/p", "s/p/q/r", "s/pq"]),
            ["s/p", "s/p/q/r"]
        );
    }

    #[test]
    fn collisions_list_every_name_of_one_path_and_files_under_a_file() {
        let plan = local_plan(
            vec![
                member(0, "s/a/b", "", ""),
                member(1, "s/a//b", "", ""),
                member(2, "s/p", "", ""),
                member(3, "s/p/q", "", ""),
                member(4, "s/p/r/", "", ""),
                member(5, "s/folder/", "", ""),
                member(6, "s/folder/in", "", ""),
            ],
            true,
        );
        assert_eq!(
            plan.collisions,
            [
                Collision {
                    path: "s/a/b".into(),
                    names: vec!["s/a//b".into(), "s/a/b".into()]
                },
                Collision {
                    path: "s/p".into(),
                    names: vec!["s/p".into(), "s/p/q".into(), "s/p/r/".into()]
                },
            ]
        );
        assert!(plan.older.is_empty());
    }

    #[test]
    fn versions_of_one_name_keep_the_newest_unless_chosen() {
        let versions = || {
            vec![
                member(0, "s/k", "v3", "2024-03-01T00:00:00Z"),
                member(1, "s/k", "v1", "2024-01-01T00:00:00Z"),
                member(2, "s/k", "v2", "2024-02-01T00:00:00.5Z"),
            ]
        };
        let plan = local_plan(versions(), true);
        assert!(plan.collisions.is_empty());
        let older: Vec<(Option<&str>, Option<&str>)> = plan
            .older
            .iter()
            .map(|(o, n)| (o.row.version_id.as_deref(), n.row.version_id.as_deref()))
            .collect();
        assert_eq!(older, [(Some("v1"), Some("v3")), (Some("v2"), Some("v3"))]);
        let chosen = local_plan(versions(), false);
        assert_eq!(chosen.collisions.len(), 1);
        assert!(chosen.older.is_empty());
    }

    #[test]
    fn runs_are_oldest_first_by_time_then_index_order() {
        let runs = version_runs(
            vec![
                member(0, "s/k", "v3", "2024-03-01T00:00:00Z"),
                member(1, "s/alone", "", ""),
                member(2, "s/k", "v2b", "2024-02-01T00:00:00Z"),
                member(3, "s/k", "v1", "2024-01-01T00:00:00.25Z"),
                member(4, "s/k", "v2a", "2024-02-01T00:00:00Z"),
            ],
            |row| row.key.clone(),
        );
        let order: Vec<Vec<u64>> = runs
            .iter()
            .map(|run| run.iter().map(|m| m.ordinal).collect())
            .collect();
        assert_eq!(order, [vec![3, 2, 4, 0]]);
    }
}
