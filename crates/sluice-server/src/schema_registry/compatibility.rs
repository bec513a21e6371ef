//! Avro schemas as the registry sees them: parsed and checked ([`AvroSchema::parse`]), and
//! compared by Avro's rules of schema resolution ([`can_read`]), which the compatibility
//! levels (`BACKWARD`, `FORWARD`, `FULL`, each optionally `_TRANSITIVE`) are made of.

use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// A type of an Avro schema. Records are referred to by their index in
/// [`AvroSchema::records`], so that a record may contain itself.
#[derive(Debug, Clone)]
enum Ty {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(usize),
    Enum {
        name: String,
        symbols: Vec<String>,
        has_default: bool,
    },
    Fixed {
        name: String,
        size: u64,
    },
    Array(Box<Ty>),
    Map(Box<Ty>),
    Union(Vec<Ty>),
}

#[derive(Debug)]
struct Record {
    /// The full name (`namespace.name`).
    name: String,
    aliases: Vec<String>,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Field {
    name: String,
    aliases: Vec<String>,
    ty: Ty,
    has_default: bool,
}

/// A parsed Avro schema.
#[derive(Debug)]
pub struct AvroSchema {
    root: Ty,
    records: Vec<Record>,
}

/// The last part of a full name.
fn unqualified(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

struct Parser {
    records: Vec<Record>,
    /// Named types by full name.
    named: HashMap<String, Ty>,
}

impl AvroSchema {
    /// Parses and checks `text` (Avro's JSON form of a schema); the error says what is wrong
    /// and where (the path of the field).
    pub fn parse(text: &str) -> Result<AvroSchema, String> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| format!("the schema is not JSON: {e}"))?;
        let mut p = Parser {
            records: Vec::new(),
            named: HashMap::new(),
        };
        let root = p.ty(&json, "", "schema")?;
        Ok(AvroSchema {
            root,
            records: p.records,
        })
    }
}

impl Parser {
    fn full_name(
        obj: &serde_json::Map<String, Value>,
        ns: &str,
        at: &str,
    ) -> Result<(String, String), String> {
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}: a named type needs a \"name\""))?;
        let ns = match obj.get("namespace") {
            Some(Value::String(n)) => n.as_str(),
            Some(Value::Null) | None => ns,
            Some(_) => return Err(format!("{at}: \"namespace\" must be a string")),
        };
        let full = if name.contains('.') || ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}.{name}")
        };
        let short = unqualified(&full);
        if short.is_empty()
            || !short.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            || !short.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("{at}: '{full}' is not a valid Avro name"));
        }
        // The namespace of what the type contains.
        let inner_ns = full
            .rsplit_once('.')
            .map(|(n, _)| n)
            .unwrap_or("")
            .to_string();
        Ok((full, inner_ns))
    }

    fn define(&mut self, full: &str, ty: Ty, at: &str) -> Result<(), String> {
        if self.named.insert(full.to_string(), ty).is_some() {
            return Err(format!("{at}: the type '{full}' is defined twice"));
        }
        Ok(())
    }

    fn reference(&self, name: &str, ns: &str, at: &str) -> Result<Ty, String> {
        let qualified = if name.contains('.') || ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}.{name}")
        };
        self.named
            .get(&qualified)
            .or_else(|| self.named.get(name))
            .cloned()
            .ok_or_else(|| format!("{at}: unknown type '{name}'"))
    }

    fn ty(&mut self, v: &Value, ns: &str, at: &str) -> Result<Ty, String> {
        match v {
            Value::String(s) => self.named_or_primitive(s, ns, at),
            Value::Array(branches) => {
                let mut tys = Vec::new();
                for (i, b) in branches.iter().enumerate() {
                    let t = self.ty(b, ns, &format!("{at}[{i}]"))?;
                    if matches!(t, Ty::Union(_)) {
                        return Err(format!("{at}: a union cannot contain a union"));
                    }
                    tys.push(t);
                }
                Ok(Ty::Union(tys))
            }
            Value::Object(obj) => {
                let kind = obj
                    .get("type")
                    .ok_or_else(|| format!("{at}: no \"type\""))?;
                let kind = match kind {
                    Value::String(k) => k.as_str(),
                    // `{"type": {...}}` or `{"type": [...]}`: the type itself.
                    other => return self.ty(other, ns, at),
                };
                match kind {
                    "record" | "error" => self.record(obj, ns, at),
                    "enum" => {
                        let (full, _) = Self::full_name(obj, ns, at)?;
                        let symbols = obj
                            .get("symbols")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("{at}: enum '{full}' needs \"symbols\""))?
                            .iter()
                            .map(|s| {
                                s.as_str().map(str::to_string).ok_or_else(|| {
                                    format!("{at}: the symbols of enum '{full}' must be strings")
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        let t = Ty::Enum {
                            name: full.clone(),
                            symbols,
                            has_default: obj.contains_key("default"),
                        };
                        self.define(&full, t.clone(), at)?;
                        Ok(t)
                    }
                    "fixed" => {
                        let (full, _) = Self::full_name(obj, ns, at)?;
                        let size = obj
                            .get("size")
                            .and_then(Value::as_u64)
                            .ok_or_else(|| format!("{at}: fixed '{full}' needs a \"size\""))?;
                        let t = Ty::Fixed {
                            name: full.clone(),
                            size,
                        };
                        self.define(&full, t.clone(), at)?;
                        Ok(t)
                    }
                    "array" => {
                        let items = obj
                            .get("items")
                            .ok_or_else(|| format!("{at}: an array needs \"items\""))?;
                        Ok(Ty::Array(Box::new(self.ty(
                            items,
                            ns,
                            &format!("{at}.items"),
                        )?)))
                    }
                    "map" => {
                        let values = obj
                            .get("values")
                            .ok_or_else(|| format!("{at}: a map needs \"values\""))?;
                        Ok(Ty::Map(Box::new(self.ty(
                            values,
                            ns,
                            &format!("{at}.values"),
                        )?)))
                    }
                    // A primitive with attributes (`logicalType`), or a named type.
                    other => self.named_or_primitive(other, ns, at),
                }
            }
            other => Err(format!("{at}: {other} is not an Avro type")),
        }
    }

    fn named_or_primitive(&mut self, s: &str, ns: &str, at: &str) -> Result<Ty, String> {
        Ok(match s {
            "null" => Ty::Null,
            "boolean" => Ty::Boolean,
            "int" => Ty::Int,
            "long" => Ty::Long,
            "float" => Ty::Float,
            "double" => Ty::Double,
            "bytes" => Ty::Bytes,
            "string" => Ty::String,
            name => self.reference(name, ns, at)?,
        })
    }

    fn record(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        ns: &str,
        at: &str,
    ) -> Result<Ty, String> {
        let (full, inner_ns) = Self::full_name(obj, ns, at)?;
        let index = self.records.len();
        self.records.push(Record {
            name: full.clone(),
            aliases: names(obj.get("aliases")),
            fields: Vec::new(),
        });
        self.define(&full, Ty::Record(index), at)?;
        let fields = obj
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{at}: record '{full}' needs \"fields\""))?;
        let mut parsed = Vec::new();
        let mut seen = HashSet::new();
        for f in fields {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: a field of record '{full}' has no \"name\""))?;
            if !seen.insert(name.to_string()) {
                return Err(format!("{at}: record '{full}' has two fields '{name}'"));
            }
            let here = format!("{full}.{name}");
            let ty = f
                .get("type")
                .ok_or_else(|| format!("{here}: no \"type\""))?;
            let ty = self.ty(ty, &inner_ns, &here)?;
            parsed.push(Field {
                name: name.to_string(),
                aliases: names(f.get("aliases")),
                ty,
                has_default: f.get("default").is_some(),
            });
        }
        self.records[index].fields = parsed;
        Ok(Ty::Record(index))
    }
}

fn names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn describe(t: &Ty, s: &AvroSchema) -> String {
    match t {
        Ty::Null => "null".into(),
        Ty::Boolean => "boolean".into(),
        Ty::Int => "int".into(),
        Ty::Long => "long".into(),
        Ty::Float => "float".into(),
        Ty::Double => "double".into(),
        Ty::Bytes => "bytes".into(),
        Ty::String => "string".into(),
        Ty::Record(i) => format!("record '{}'", s.records[*i].name),
        Ty::Enum { name, .. } => format!("enum '{name}'"),
        Ty::Fixed { name, .. } => format!("fixed '{name}'"),
        Ty::Array(_) => "array".into(),
        Ty::Map(_) => "map".into(),
        Ty::Union(_) => "union".into(),
    }
}

/// Ok if data written with `writer` can be read with `reader` (Avro's schema resolution);
/// otherwise the first reason it cannot.
pub fn can_read(reader: &AvroSchema, writer: &AvroSchema) -> Result<(), String> {
    Resolve {
        reader,
        writer,
        seen: HashSet::new(),
    }
    .check(&reader.root, &writer.root, "")
}

struct Resolve<'a> {
    reader: &'a AvroSchema,
    writer: &'a AvroSchema,
    /// Pairs of records being compared (a recursive record is compatible with itself).
    seen: HashSet<(usize, usize)>,
}

impl Resolve<'_> {
    fn check(&mut self, r: &Ty, w: &Ty, at: &str) -> Result<(), String> {
        let place = |at: &str| {
            if at.is_empty() {
                String::new()
            } else {
                format!("at '{at}': ")
            }
        };
        let mismatch = |r: &Ty, w: &Ty| {
            format!(
                "{}a {} cannot be read as a {}",
                place(at),
                describe(w, self.writer),
                describe(r, self.reader)
            )
        };
        match (r, w) {
            // Every value the writer's union can hold must be readable.
            (_, Ty::Union(ws)) => {
                for wb in ws {
                    self.check(r, wb, at)?;
                }
                Ok(())
            }
            (Ty::Union(rs), _) => {
                if rs.iter().any(|rb| self.clone_check(rb, w, at)) {
                    Ok(())
                } else {
                    Err(format!(
                        "{}no branch of the reader's union can read a {}",
                        place(at),
                        describe(w, self.writer)
                    ))
                }
            }
            (Ty::Null, Ty::Null)
            | (Ty::Boolean, Ty::Boolean)
            | (Ty::Int, Ty::Int)
            | (Ty::Long, Ty::Int | Ty::Long)
            | (Ty::Float, Ty::Int | Ty::Long | Ty::Float)
            | (Ty::Double, Ty::Int | Ty::Long | Ty::Float | Ty::Double)
            | (Ty::Bytes, Ty::Bytes | Ty::String)
            | (Ty::String, Ty::String | Ty::Bytes) => Ok(()),
            (Ty::Array(ri), Ty::Array(wi)) => self.check(ri, wi, &format!("{at}[]")),
            (Ty::Map(rv), Ty::Map(wv)) => self.check(rv, wv, &format!("{at}{{}}")),
            (Ty::Fixed { name: rn, size: rs }, Ty::Fixed { name: wn, size: ws }) => {
                if unqualified(rn) != unqualified(wn) || rs != ws {
                    return Err(mismatch(r, w));
                }
                Ok(())
            }
            (
                Ty::Enum {
                    name: rn,
                    symbols: rsym,
                    has_default,
                },
                Ty::Enum {
                    name: wn,
                    symbols: wsym,
                    ..
                },
            ) => {
                if unqualified(rn) != unqualified(wn) {
                    return Err(mismatch(r, w));
                }
                if !has_default {
                    if let Some(missing) = wsym.iter().find(|s| !rsym.contains(s)) {
                        return Err(format!(
                            "{}the reader's enum '{rn}' has no symbol '{missing}' and no default",
                            place(at)
                        ));
                    }
                }
                Ok(())
            }
            (Ty::Record(ri), Ty::Record(wi)) => {
                let (rr, wr) = (&self.reader.records[*ri], &self.writer.records[*wi]);
                let wname = unqualified(&wr.name);
                if unqualified(&rr.name) != wname
                    && !rr.aliases.iter().any(|a| unqualified(a) == wname)
                {
                    return Err(mismatch(r, w));
                }
                if !self.seen.insert((*ri, *wi)) {
                    return Ok(());
                }
                for rf in &rr.fields {
                    let here = if at.is_empty() {
                        rf.name.clone()
                    } else {
                        format!("{at}.{}", rf.name)
                    };
                    let wf = wr
                        .fields
                        .iter()
                        .find(|wf| wf.name == rf.name || rf.aliases.contains(&wf.name));
                    match wf {
                        Some(wf) => self.check(&rf.ty, &wf.ty, &here)?,
                        None if rf.has_default => {}
                        None => {
                            return Err(format!(
                                "the reader's field '{here}' has no default and the writer's schema has no such field"
                            ))
                        }
                    }
                }
                Ok(())
            }
            _ => Err(mismatch(r, w)),
        }
    }

    /// `check` as a question, for trying the branches of a union.
    fn clone_check(&mut self, r: &Ty, w: &Ty, at: &str) -> bool {
        let seen = self.seen.clone();
        let ok = self.check(r, w, at).is_ok();
        if !ok {
            self.seen = seen;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(s: &str) -> AvroSchema {
        AvroSchema::parse(s).unwrap()
    }

    const V1: &str = r#"{"type":"record","name":"user","namespace":"a","fields":[
        {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;

    #[test]
    fn a_new_field_with_a_default_keeps_backward_compatibility() {
        let v2 = schema(
            r#"{"type":"record","name":"user","namespace":"b","fields":[
            {"name":"id","type":"long"},{"name":"name","type":"string"},
            {"name":"email","type":["null","string"],"default":null}]}"#,
        );
        let v1 = schema(V1);
        assert!(can_read(&v2, &v1).is_ok());
        // And old readers ignore it (forward).
        assert!(can_read(&v1, &v2).is_ok());
    }

    #[test]
    fn a_new_field_without_a_default_breaks_backward_compatibility() {
        let v2 = schema(
            r#"{"type":"record","name":"user","fields":[
            {"name":"id","type":"long"},{"name":"name","type":"string"},
            {"name":"age","type":"int"}]}"#,
        );
        let err = can_read(&v2, &schema(V1)).unwrap_err();
        assert!(err.contains("'age' has no default"), "{err}");
    }

    #[test]
    fn promotions_and_unions_follow_avro() {
        let long = schema(r#""long""#);
        let int = schema(r#""int""#);
        assert!(can_read(&long, &int).is_ok());
        assert!(can_read(&int, &long).is_err());
        let nullable = schema(r#"["null","double"]"#);
        assert!(can_read(&nullable, &int).is_ok());
        // A writer's null cannot be read as a plain double.
        assert!(can_read(&schema(r#""double""#), &nullable).is_err());
        let e1 = schema(r#"{"type":"enum","name":"e","symbols":["A","B"]}"#);
        let e2 = schema(r#"{"type":"enum","name":"e","symbols":["A"]}"#);
        assert!(can_read(&e1, &e2).is_ok());
        assert!(can_read(&e2, &e1).is_err());
    }

    #[test]
    fn recursive_records_and_references_resolve() {
        let list = r#"{"type":"record","name":"node","fields":[
            {"name":"value","type":"int"},{"name":"next","type":["null","node"]}]}"#;
        assert!(can_read(&schema(list), &schema(list)).is_ok());
    }

    #[test]
    fn invalid_schemas_say_where() {
        let err = AvroSchema::parse(
            r#"{"type":"record","name":"r","fields":[{"name":"x","type":"nope"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("r.x") && err.contains("unknown type 'nope'"),
            "{err}"
        );
        assert!(AvroSchema::parse("{").unwrap_err().contains("not JSON"));
        assert!(AvroSchema::parse(r#"{"type":"record","name":"1x","fields":[]}"#).is_err());
    }
}
