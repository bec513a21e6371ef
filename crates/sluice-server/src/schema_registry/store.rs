//! What the schema registry keeps: schemas by id, subjects as lists of versions, and the
//! compatibility levels; in one JSON file, replaced whole (written aside, synced, renamed)
//! at every change, so that a crash leaves the old or the new state, never half of one.

use super::compatibility::{can_read, AvroSchema};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A compatibility level, as Confluent's registry names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }
}

/// Why a request cannot be done, with Confluent's error code.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    SubjectNotFound(String),
    VersionNotFound(String),
    SchemaNotFound(String),
    InvalidSchema(String),
    InvalidVersion(String),
    /// A permanent delete of a subject (`subject: true`) or version not soft-deleted first.
    NotSoftDeleted {
        subject: bool,
        message: String,
    },
    Incompatible(String),
    /// The file could not be written: nothing changed.
    Storage(String),
}

impl StoreError {
    /// The HTTP status and Confluent's `error_code`.
    pub fn codes(&self) -> (u16, u32) {
        match self {
            StoreError::SubjectNotFound(_) => (404, 40401),
            StoreError::VersionNotFound(_) => (404, 40402),
            StoreError::SchemaNotFound(_) => (404, 40403),
            StoreError::InvalidSchema(_) => (422, 42201),
            StoreError::InvalidVersion(_) => (422, 42202),
            StoreError::NotSoftDeleted { subject: true, .. } => (404, 40405),
            StoreError::NotSoftDeleted { subject: false, .. } => (404, 40407),
            StoreError::Incompatible(_) => (409, 409),
            StoreError::Storage(_) => (500, 50001),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            StoreError::SubjectNotFound(m)
            | StoreError::VersionNotFound(m)
            | StoreError::SchemaNotFound(m)
            | StoreError::InvalidSchema(m)
            | StoreError::InvalidVersion(m)
            | StoreError::NotSoftDeleted { message: m, .. }
            | StoreError::Incompatible(m)
            | StoreError::Storage(m) => m,
        }
    }
}

type Res<T> = Result<T, StoreError>;

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: u32,
    pub id: u32,
    /// Soft-deleted: hidden unless asked for, and not compared with new schemas.
    pub deleted: bool,
}

/// The registry's state.
#[derive(Debug, Default)]
pub struct Store {
    /// Where it is kept; `None` keeps it in memory only.
    path: Option<PathBuf>,
    /// Schema `i + 1`'s text (ids start at 1, as Confluent's).
    schemas: Vec<String>,
    subjects: BTreeMap<String, Vec<Version>>,
    global: Option<Level>,
    levels: BTreeMap<String, Level>,
}

/// Two texts of one schema are the same schema if they are the same JSON (whatever the
/// spacing and the order of keys).
fn canonical(schema: &str) -> String {
    serde_json::from_str::<Value>(schema)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| schema.to_string())
}

impl Store {
    /// The store kept in `path` (read if it exists).
    pub fn open(path: Option<PathBuf>) -> Result<Store, String> {
        let mut store = Store {
            path: path.clone(),
            ..Default::default()
        };
        let Some(path) = path else {
            return Ok(store);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let bad = |what: &str| format!("{}: {what}", path.display());
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        for s in v["schemas"]
            .as_array()
            .ok_or_else(|| bad("no \"schemas\""))?
        {
            store.schemas.push(
                s.as_str()
                    .ok_or_else(|| bad("a schema is not a string"))?
                    .into(),
            );
        }
        if let Some(subjects) = v["subjects"].as_object() {
            for (name, versions) in subjects {
                let mut list = Vec::new();
                for ver in versions
                    .as_array()
                    .ok_or_else(|| bad("a subject is not a list"))?
                {
                    let num = |k: &str| {
                        ver[k]
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .ok_or_else(|| bad(&format!("subject '{name}': no \"{k}\"")))
                    };
                    list.push(Version {
                        version: num("version")?,
                        id: num("id")?,
                        deleted: ver["deleted"].as_bool().unwrap_or(false),
                    });
                }
                store.subjects.insert(name.clone(), list);
            }
        }
        store.global = v["compatibility"].as_str().and_then(Level::parse);
        if let Some(levels) = v["subject_compatibility"].as_object() {
            for (name, l) in levels {
                if let Some(l) = l.as_str().and_then(Level::parse) {
                    store.levels.insert(name.clone(), l);
                }
            }
        }
        Ok(store)
    }

    fn to_json(&self) -> Value {
        let subjects: serde_json::Map<String, Value> = self
            .subjects
            .iter()
            .map(|(name, versions)| {
                let list = versions
                    .iter()
                    .map(|v| json!({"version": v.version, "id": v.id, "deleted": v.deleted}))
                    .collect();
                (name.clone(), Value::Array(list))
            })
            .collect();
        let levels: serde_json::Map<String, Value> = self
            .levels
            .iter()
            .map(|(n, l)| (n.clone(), json!(l.name())))
            .collect();
        json!({
            "schemas": self.schemas,
            "subjects": subjects,
            "compatibility": self.global.map(Level::name),
            "subject_compatibility": levels,
        })
    }

    /// Applies `change`, then writes the whole state; if it cannot be written, the change is
    /// undone and the request fails.
    fn change<T>(&mut self, change: impl FnOnce(&mut Store) -> Res<T>) -> Res<T> {
        let before = (
            self.schemas.len(),
            self.subjects.clone(),
            self.global,
            self.levels.clone(),
        );
        let out = change(self)?;
        if let Err(e) = self.save() {
            self.schemas.truncate(before.0);
            self.subjects = before.1;
            self.global = before.2;
            self.levels = before.3;
            return Err(StoreError::Storage(e));
        }
        Ok(out)
    }

    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(fail)?;
            f.write_all(self.to_json().to_string().as_bytes())
                .map_err(fail)?;
            f.sync_all().map_err(fail)?;
        }
        std::fs::rename(&tmp, path).map_err(fail)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Schema `id`'s text.
    pub fn schema(&self, id: u32) -> Res<&str> {
        id.checked_sub(1)
            .and_then(|i| self.schemas.get(i as usize))
            .map(String::as_str)
            .ok_or_else(|| StoreError::SchemaNotFound(format!("Schema {id} not found")))
    }

    /// The subjects (with soft-deleted ones if `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<&str> {
        self.subjects
            .iter()
            .filter(|(_, v)| v.iter().any(|v| deleted || !v.deleted))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn live(&self, subject: &str, deleted: bool) -> Res<Vec<&Version>> {
        let versions: Vec<&Version> = self
            .subjects
            .get(subject)
            .map(|v| v.iter().filter(|v| deleted || !v.deleted).collect())
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(StoreError::SubjectNotFound(format!(
                "Subject '{subject}' not found."
            )));
        }
        Ok(versions)
    }

    /// The versions of `subject`.
    pub fn versions(&self, subject: &str, deleted: bool) -> Res<Vec<u32>> {
        Ok(self
            .live(subject, deleted)?
            .into_iter()
            .map(|v| v.version)
            .collect())
    }

    /// Version `version` of `subject` (`latest` or `-1` for the newest).
    pub fn version(&self, subject: &str, version: &str, deleted: bool) -> Res<Version> {
        let versions = self.live(subject, deleted)?;
        let found = if version == "latest" || version == "-1" {
            versions.last().copied()
        } else {
            let n: u32 = version
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    StoreError::InvalidVersion(format!(
                        "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
                    ))
                })?;
            versions.into_iter().find(|v| v.version == n)
        };
        found.cloned().ok_or_else(|| {
            StoreError::VersionNotFound(format!(
                "Version {version} not found for subject '{subject}'."
            ))
        })
    }

    /// The subjects and versions that hold schema `id`.
    pub fn uses(&self, id: u32) -> Res<Vec<(&str, u32)>> {
        self.schema(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(n, vs)| {
                vs.iter()
                    .filter(move |v| v.id == id && !v.deleted)
                    .map(move |v| (n.as_str(), v.version))
            })
            .collect())
    }

    /// The compatibility level of `subject` (`None`: the global one), or the global level.
    pub fn level(&self, subject: Option<&str>) -> Option<Level> {
        match subject {
            Some(s) => self.levels.get(s).copied(),
            None => Some(self.global.unwrap_or(Level::Backward)),
        }
    }

    fn effective_level(&self, subject: &str) -> Level {
        self.levels
            .get(subject)
            .copied()
            .unwrap_or(self.global.unwrap_or(Level::Backward))
    }

    pub fn set_level(&mut self, subject: Option<&str>, level: Level) -> Res<()> {
        self.change(|s| {
            match subject {
                Some(name) => {
                    s.levels.insert(name.to_string(), level);
                }
                None => s.global = Some(level),
            }
            Ok(())
        })
    }

    /// Removes `subject`'s own level; returns it.
    pub fn delete_level(&mut self, subject: &str) -> Res<Level> {
        let Some(old) = self.levels.get(subject).copied() else {
            return Err(StoreError::SubjectNotFound(format!(
                "Subject '{subject}' not found."
            )));
        };
        self.change(|s| {
            s.levels.remove(subject);
            Ok(old)
        })
    }

    fn parse(schema: &str) -> Res<AvroSchema> {
        AvroSchema::parse(schema)
            .map_err(|e| StoreError::InvalidSchema(format!("Invalid schema: {e}")))
    }

    /// Why `schema` cannot be added to `subject` under its compatibility level, comparing it
    /// with `against` (a version, or all the level asks for).
    pub fn incompatibilities(
        &self,
        subject: &str,
        schema: &str,
        against: Option<&str>,
    ) -> Res<Vec<String>> {
        let new = Self::parse(schema)?;
        let level = self.effective_level(subject);
        let old: Vec<Version> = match against {
            Some(v) => vec![self.version(subject, v, false)?],
            None => match self.live(subject, false) {
                Ok(vs) if level.transitive() => vs.into_iter().cloned().collect(),
                Ok(vs) => vs.last().map(|v| vec![(*v).clone()]).unwrap_or_default(),
                Err(_) => Vec::new(),
            },
        };
        let mut why = Vec::new();
        for v in old {
            let existing = Self::parse(self.schema(v.id)?)?;
            let backward = matches!(
                level,
                Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
            );
            let forward = matches!(
                level,
                Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
            );
            if backward {
                if let Err(e) = can_read(&new, &existing) {
                    why.push(format!(
                        "{} (the new schema cannot read data written with version {}): {e}",
                        level.name(),
                        v.version
                    ));
                }
            }
            if forward {
                if let Err(e) = can_read(&existing, &new) {
                    why.push(format!(
                        "{} (version {} cannot read data written with the new schema): {e}",
                        level.name(),
                        v.version
                    ));
                }
            }
        }
        Ok(why)
    }

    /// The id of `schema` if `subject` has it (its version), else `None`.
    pub fn lookup(&self, subject: &str, schema: &str, deleted: bool) -> Res<Version> {
        let versions = self.live(subject, deleted)?;
        let canon = canonical(schema);
        versions
            .into_iter()
            .find(|v| {
                self.schemas
                    .get(v.id as usize - 1)
                    .is_some_and(|s| canonical(s) == canon)
            })
            .cloned()
            .ok_or_else(|| StoreError::SchemaNotFound("Schema not found".into()))
    }

    /// Registers `schema` under `subject`: its id (the same id for the same schema in any
    /// subject); a new version unless the subject already has it.
    pub fn register(&mut self, subject: &str, schema: &str) -> Res<Version> {
        Self::parse(schema)?;
        if let Ok(v) = self.lookup(subject, schema, false) {
            return Ok(v);
        }
        let why = self.incompatibilities(subject, schema, None)?;
        if !why.is_empty() {
            return Err(StoreError::Incompatible(format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                why.join("; ")
            )));
        }
        let canon = canonical(schema);
        self.change(|s| {
            let id = match s.schemas.iter().position(|t| canonical(t) == canon) {
                Some(i) => i as u32 + 1,
                None => {
                    s.schemas.push(schema.trim().to_string());
                    s.schemas.len() as u32
                }
            };
            let versions = s.subjects.entry(subject.to_string()).or_default();
            let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            let v = Version {
                version,
                id,
                deleted: false,
            };
            versions.push(v.clone());
            Ok(v)
        })
    }

    /// Deletes `subject` (soft, or `permanent` after a soft delete); the versions deleted.
    pub fn delete_subject(&mut self, subject: &str, permanent: bool) -> Res<Vec<u32>> {
        let all = self.live(subject, true)?;
        let live: Vec<u32> = all
            .iter()
            .filter(|v| !v.deleted)
            .map(|v| v.version)
            .collect();
        if permanent {
            if !live.is_empty() {
                return Err(StoreError::NotSoftDeleted {
                    subject: true,
                    message: format!(
                        "Subject '{subject}' was not deleted first before being permanently deleted"
                    ),
                });
            }
            let gone: Vec<u32> = all.iter().map(|v| v.version).collect();
            return self.change(|s| {
                s.subjects.remove(subject);
                s.levels.remove(subject);
                Ok(gone)
            });
        }
        self.change(|s| {
            for v in s.subjects.get_mut(subject).into_iter().flatten() {
                v.deleted = true;
            }
            Ok(live)
        })
    }

    /// Deletes one version of `subject` (soft, or `permanent` after a soft delete).
    pub fn delete_version(&mut self, subject: &str, version: &str, permanent: bool) -> Res<u32> {
        let v = self.version(subject, version, permanent)?;
        if permanent && !v.deleted {
            return Err(StoreError::NotSoftDeleted {
                subject: false,
                message: format!(
                    "Subject '{subject}' Version {} was not deleted first before being permanently deleted",
                    v.version
                ),
            });
        }
        self.change(|s| {
            if let Some(vs) = s.subjects.get_mut(subject) {
                if permanent {
                    vs.retain(|x| x.version != v.version);
                    if vs.is_empty() {
                        s.subjects.remove(subject);
                    }
                } else if let Some(x) = vs.iter_mut().find(|x| x.version == v.version) {
                    x.deleted = true;
                }
            }
            Ok(v.version)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"},
        {"name":"b","type":"string","default":""}]}"#;
    const BAD: &str = r#"{"type":"record","name":"r","fields":[{"name":"c","type":"int"}]}"#;

    #[test]
    fn ids_are_shared_and_versions_count_per_subject() {
        let mut s = Store::open(None).unwrap();
        let a = s.register("t-value", V1).unwrap();
        assert_eq!((a.id, a.version), (1, 1));
        // The same schema again (other spacing): the same version.
        let again = s.register("t-value", &V1.replace(':', " : ")).unwrap();
        assert_eq!((again.id, again.version), (1, 1));
        // In another subject: the same id, that subject's version 1.
        let other = s.register("u-value", V1).unwrap();
        assert_eq!((other.id, other.version), (1, 1));
        let b = s.register("t-value", V2).unwrap();
        assert_eq!((b.id, b.version), (2, 2));
        assert_eq!(s.versions("t-value", false).unwrap(), vec![1, 2]);
        assert_eq!(s.version("t-value", "latest", false).unwrap().id, 2);
        assert_eq!(s.uses(1).unwrap(), vec![("t-value", 1), ("u-value", 1)]);
    }

    #[test]
    fn incompatible_schemas_are_refused_unless_the_level_is_none() {
        let mut s = Store::open(None).unwrap();
        s.register("t", V1).unwrap();
        let err = s.register("t", BAD).unwrap_err();
        assert_eq!(err.codes(), (409, 409));
        assert!(err.message().contains("'c' has no default"), "{err:?}");
        s.set_level(Some("t"), Level::None).unwrap();
        assert_eq!(s.register("t", BAD).unwrap().version, 2);
    }

    #[test]
    fn deletes_are_soft_then_permanent() {
        let mut s = Store::open(None).unwrap();
        s.register("t", V1).unwrap();
        assert_eq!(
            s.delete_subject("t", true).unwrap_err().codes(),
            (404, 40405)
        );
        assert_eq!(s.delete_subject("t", false).unwrap(), vec![1]);
        assert_eq!(s.subjects(false), Vec::<&str>::new());
        assert_eq!(s.subjects(true), vec!["t"]);
        assert_eq!(
            s.version("t", "1", false).unwrap_err().codes(),
            (404, 40401)
        );
        assert_eq!(s.delete_subject("t", true).unwrap(), vec![1]);
        // The schema keeps its id.
        assert_eq!(s.schema(1).unwrap(), V1);
    }

    #[test]
    fn the_state_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schemas.json");
        let mut s = Store::open(Some(path.clone())).unwrap();
        s.register("t", V1).unwrap();
        s.set_level(None, Level::Full).unwrap();
        drop(s);
        let s = Store::open(Some(path)).unwrap();
        assert_eq!(s.version("t", "1", false).unwrap().id, 1);
        assert_eq!(s.level(None), Some(Level::Full));
        assert!(s.schema(2).is_err());
    }
}
