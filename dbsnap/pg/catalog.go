package pg

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// tableInfo is a table to dump: its Table record and what the workers need.
type tableInfo struct {
	oid   uint32
	pages int64
	t     *pb.Table
	cols  string // select list for COPY
}

// resolveTables turns --tables names (SQL syntax: orders, public.orders,
// "My Table") into OIDs, with the session's search_path.
func resolveTables(ctx context.Context, tx pgx.Tx, names []string) ([]uint32, error) {
	var oids []uint32
	for _, n := range names {
		var oid *uint32
		if err := tx.QueryRow(ctx, "SELECT pg_catalog.to_regclass($1)::oid", n).Scan(&oid); err != nil {
			return nil, fmt.Errorf("pg: table %q: %w", n, pgErr(err))
		}
		if oid == nil {
			return nil, fmt.Errorf("pg: table %q does not exist", n)
		}
		if !slices.Contains(oids, *oid) { // orders,public.orders: once
			oids = append(oids, *oid)
		}
	}
	return oids, nil
}

// listTables returns the ordinary tables to dump: oids if given, else
// those of schema, else every table outside the system schemas.
func listTables(ctx context.Context, tx pgx.Tx, oids []uint32, schema string) ([]*tableInfo, error) {
	q := `SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispartition,
	       pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::bigint
	  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	 WHERE `
	var args []any
	switch {
	case oids != nil:
		q += `c.oid = ANY($1)`
		args = append(args, oids)
	case schema != "":
		q += `c.relkind IN ('r','p') AND n.nspname = $1`
		args = append(args, schema)
	default:
		q += `c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg\_%'
		   AND n.nspname NOT LIKE 'segmq\_restore\_%'`
	}
	q += ` ORDER BY n.nspname, c.relname`
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, pgErr(err)
	}
	var out []*tableInfo
	for rows.Next() {
		ti := &tableInfo{t: &pb.Table{}}
		var kind string
		var part bool
		if err := rows.Scan(&ti.oid, &ti.t.Schema, &ti.t.Relname, &kind, &part, &ti.pages); err != nil {
			return nil, err
		}
		ti.t.Name = ti.t.Schema + "." + ti.t.Relname
		if kind != "r" || part {
			rows.Close()
			return nil, fmt.Errorf("pg: %s is not an ordinary table (kind %q, partition %v): partitioned tables, views and partitions are not supported", ti.t.Name, kind, part)
		}
		out = append(out, ti)
	}
	if err := rows.Err(); err != nil {
		return nil, pgErr(err)
	}
	if schema != "" && len(out) == 0 {
		return nil, fmt.Errorf("pg: schema %q has no tables", schema)
	}
	return out, nil
}

// describe fills ti.t's columns, constraints, indexes and sequences, and
// returns the enum types its columns use.
func describe(ctx context.Context, tx pgx.Tx, ti *tableInfo) ([]uint32, error) {
	rows, err := tx.Query(ctx, `
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), t.oid, t.typname, t.typtype::text,
       CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END, coalesce(et.typtype::text, ''),
       a.attnotnull, a.attidentity::text, a.attgenerated::text,
       coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_type et ON t.typcategory = 'A' AND et.oid = t.typelem
  LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum`, ti.oid)
	if err != nil {
		return nil, pgErr(err)
	}
	var enums []uint32
	var sel []string
	for rows.Next() {
		c := &pb.Column{}
		var ty typeInfo
		var notNull bool
		var generated string
		if err := rows.Scan(&c.Name, &c.DeclaredType, &ty.oid, &ty.name, &ty.typtype, &ty.elemOID, &ty.elemType,
			&notNull, &c.Identity, &generated, &c.DefaultExpr); err != nil {
			return nil, err
		}
		if generated != "" {
			// Stored generated: the expression travels, and the values
			// too (verify compares them with what the target computes).
			c.GeneratedExpr, c.DefaultExpr = c.DefaultExpr, ""
		}
		c.Nullable = !notNull
		c.Type, c.PgEncoding = classify(ty)
		c.PgTypeName = ty.name
		if ty.typtype == "e" {
			enums = append(enums, ty.oid)
		}
		if ty.elemType == "e" {
			enums = append(enums, ty.elemOID)
		}
		expr := ident(c.Name)
		if c.PgEncoding == pb.PgEncoding_PG_ENCODING_TEXT {
			expr += "::text"
			c.PgTypeName = "text"
		}
		sel = append(sel, expr)
		ti.t.Columns = append(ti.t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, pgErr(err)
	}
	ti.cols = strings.Join(sel, ", ")
	if err := describeSequences(ctx, tx, ti); err != nil {
		return nil, err
	}
	if err := describeConstraints(ctx, tx, ti); err != nil {
		return nil, err
	}
	if err := describeIndexes(ctx, tx, ti); err != nil {
		return nil, err
	}
	return enums, nil
}

func describeSequences(ctx context.Context, tx pgx.Tx, ti *tableInfo) error {
	rows, err := tx.Query(ctx, `
SELECT a.attname, sn.nspname, sc.relname, pg_catalog.format_type(s.seqtypid, NULL),
       s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle, s.seqcache, d.deptype::text
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class sc ON sc.oid = d.objid AND sc.relkind = 'S'
  JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace
  JOIN pg_catalog.pg_sequence s ON s.seqrelid = sc.oid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND d.refobjid = $1 AND d.deptype IN ('a', 'i')`, ti.oid)
	if err != nil {
		return pgErr(err)
	}
	type owned struct {
		col string
		seq *pb.Sequence
	}
	var seqs []owned
	for rows.Next() {
		var o owned
		o.seq = &pb.Sequence{}
		var dep string
		s := o.seq
		if err := rows.Scan(&o.col, &s.Schema, &s.Name, &s.DataType, &s.Start, &s.Increment, &s.MinValue, &s.MaxValue,
			&s.Cycle, &s.Cache, &dep); err != nil {
			return err
		}
		seqs = append(seqs, o)
	}
	if err := rows.Err(); err != nil {
		return pgErr(err)
	}
	for _, o := range seqs {
		// Sequences are not transactional: this is the state now, at or
		// after the snapshot, which is what a restore must continue from.
		if err := tx.QueryRow(ctx, "SELECT last_value, is_called FROM "+ident(o.seq.Schema, o.seq.Name)).
			Scan(&o.seq.LastValue, &o.seq.IsCalled); err != nil {
			return fmt.Errorf("pg: sequence %s.%s: %w", o.seq.Schema, o.seq.Name, pgErr(err))
		}
		for _, c := range ti.t.Columns {
			if c.Name != o.col {
				continue
			}
			c.Sequence = o.seq
			if c.Identity == "" && strings.HasPrefix(c.DefaultExpr, "nextval(") {
				c.DefaultExpr = "" // the restore recreates it from Sequence
			}
		}
	}
	return nil
}

func describeConstraints(ctx context.Context, tx pgx.Tx, ti *tableInfo) error {
	rows, err := tx.Query(ctx, `
SELECT con.conname, con.contype::text, pg_catalog.pg_get_constraintdef(con.oid),
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o)::text[],
       coalesce(fn.nspname, ''), coalesce(fc.relname, ''),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o)::text[]
  FROM pg_catalog.pg_constraint con
  LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
  LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
 WHERE con.conrelid = $1 AND con.contype IN ('p', 'u', 'f', 'c', 'x')
 ORDER BY con.contype = 'f', con.conname`, ti.oid)
	if err != nil {
		return pgErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		c := &pb.Constraint{}
		var kind string
		if err := rows.Scan(&c.Name, &kind, &c.PgDefinition, &c.Columns, &c.RefSchema, &c.RefTable, &c.RefColumns); err != nil {
			return err
		}
		c.Kind = map[string]pb.ConstraintKind{
			"p": pb.ConstraintKind_CONSTRAINT_KIND_PRIMARY_KEY, "u": pb.ConstraintKind_CONSTRAINT_KIND_UNIQUE,
			"f": pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY, "c": pb.ConstraintKind_CONSTRAINT_KIND_CHECK,
		}[kind]
		if c.Kind == pb.ConstraintKind_CONSTRAINT_KIND_PRIMARY_KEY {
			ti.t.PrimaryKey = c.Columns
		}
		ti.t.Constraints = append(ti.t.Constraints, c)
	}
	return pgErr(rows.Err())
}

func describeIndexes(ctx context.Context, tx pgx.Tx, ti *tableInfo) error {
	rows, err := tx.Query(ctx, `
SELECT ic.relname, i.indisunique, pg_catalog.pg_get_indexdef(i.indexrelid),
       CASE WHEN i.indexprs IS NULL AND i.indpred IS NULL THEN
         ARRAY(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, o)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o)::text[]
       ELSE '{}'::text[] END
  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
 WHERE i.indrelid = $1
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
 ORDER BY ic.relname`, ti.oid)
	if err != nil {
		return pgErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		ix := &pb.Index{}
		if err := rows.Scan(&ix.Name, &ix.Unique, &ix.PgDefinition, &ix.Columns); err != nil {
			return err
		}
		ti.t.Indexes = append(ti.t.Indexes, ix)
	}
	return pgErr(rows.Err())
}

// describeEnums returns the enum types with the given OIDs.
func describeEnums(ctx context.Context, tx pgx.Tx, oids []uint32) ([]*pb.EnumType, error) {
	if len(oids) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, `
SELECT n.nspname, t.typname,
       ARRAY(SELECT e.enumlabel FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)::text[]
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
 WHERE t.oid = ANY($1) ORDER BY n.nspname, t.typname`, oids)
	if err != nil {
		return nil, pgErr(err)
	}
	defer rows.Close()
	var out []*pb.EnumType
	for rows.Next() {
		e := &pb.EnumType{}
		if err := rows.Scan(&e.Schema, &e.Name, &e.Labels); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, pgErr(rows.Err())
}

// notCarried lists what a dump of tables leaves behind in their schemas:
// views, materialized views, partitioned and foreign tables, standalone
// sequences, functions and procedures, types other than the enums the
// columns use, and on the tables themselves triggers, rules, policies and
// row-level security; plus the database's extensions. Objects that belong
// to an extension are the extension's. One line each, e.g. "view
// public.v"; sorted.
func notCarried(ctx context.Context, tx pgx.Tx, tables []*tableInfo) ([]string, error) {
	var schemas []string
	var oids []uint32
	for _, ti := range tables {
		if !slices.Contains(schemas, ti.t.Schema) {
			schemas = append(schemas, ti.t.Schema)
		}
		oids = append(oids, ti.oid)
	}
	rows, err := tx.Query(ctx, `
WITH ext AS (SELECT classid, objid FROM pg_catalog.pg_depend WHERE deptype = 'e')
SELECT kind || ' ' || name FROM (
  SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'p' THEN 'partitioned table'
                        WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence' END AS kind,
         pg_catalog.format('%I.%I', n.nspname, c.relname) AS name
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = ANY($1) AND c.relkind IN ('v', 'm', 'p', 'f', 'S')
     AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND ext.objid = c.oid)
  UNION ALL
  SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function' ELSE 'function' END,
         pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = ANY($1)
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND ext.objid = p.oid)
  UNION ALL
  SELECT CASE t.typtype WHEN 'd' THEN 'domain' WHEN 'e' THEN 'enum type' WHEN 'r' THEN 'range type' WHEN 'c' THEN 'composite type' ELSE 'type' END,
         pg_catalog.format('%I.%I', n.nspname, t.typname)
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE n.nspname = ANY($1) AND t.typtype IN ('b', 'd', 'e', 'r', 'c')
     AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')
     AND NOT (t.typtype = 'b' AND t.typcategory = 'A')
     AND NOT (t.typtype = 'e' AND t.oid IN (SELECT a.atttypid FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($2)
              UNION SELECT e.typelem FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type e ON e.oid = a.atttypid WHERE a.attrelid = ANY($2)))
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND ext.objid = t.oid)
  UNION ALL
  SELECT 'trigger', pg_catalog.format('%I on %s', t.tgname, t.tgrelid::pg_catalog.regclass)
    FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal AND t.tgrelid = ANY($2)
  UNION ALL
  SELECT 'rule', pg_catalog.format('%I on %s', r.rulename, r.ev_class::pg_catalog.regclass)
    FROM pg_catalog.pg_rewrite r WHERE r.ev_class = ANY($2) AND r.rulename <> '_RETURN'
  UNION ALL
  SELECT 'policy', pg_catalog.format('%I on %s', p.polname, p.polrelid::pg_catalog.regclass)
    FROM pg_catalog.pg_policy p WHERE p.polrelid = ANY($2)
  UNION ALL
  SELECT 'row level security on', c.oid::pg_catalog.regclass::text
    FROM pg_catalog.pg_class c WHERE c.oid = ANY($2) AND c.relrowsecurity
  UNION ALL
  SELECT 'extension', pg_catalog.quote_ident(e.extname) FROM pg_catalog.pg_extension e WHERE e.extname <> 'plpgsql'
) x ORDER BY 1`, schemas, oids)
	if err != nil {
		return nil, fmt.Errorf("pg: list what the dump leaves behind: %w", pgErr(err))
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
