package pg

import (
	"fmt"
	"strings"

	pb "github.com/segmq/segmq/proto/snapshotpb"
)

// The statements that finish a restore after its rows are loaded, shared
// by the one-transaction restore (finishTables) and the parallel one
// (buildParallel, finishParallel), which differ only in where they run
// them and under which names (the staging schemas).

// execFunc runs one statement; what names it in an error.
type execFunc func(what, q string, args ...any) error

// columnDef is column c's definition in a CREATE TABLE, its type and
// default mapped by typ and expr to the schema the table is in, an
// identity's sequence named seq. serial reports a sequence that is not an
// identity's, which the caller creates and attaches itself.
func columnDef(c *pb.Column, typ, expr func(string) string, seq string) (def string, serial bool) {
	ty, castAfter, _ := targetType(c)
	d := ident(c.GetName()) + " " + typ(ty)
	if !c.GetNullable() {
		d += " NOT NULL"
	}
	if c.GetDefaultExpr() != "" && !castAfter {
		d += " DEFAULT " + expr(c.GetDefaultExpr())
	}
	if g := c.GetGeneratedExpr(); g != "" {
		d += " GENERATED ALWAYS AS (" + g + ") STORED"
	}
	if s := c.GetSequence(); s != nil {
		switch c.GetIdentity() {
		case "a", "d":
			kind := "ALWAYS"
			if c.GetIdentity() == "d" {
				kind = "BY DEFAULT"
			}
			d += fmt.Sprintf(" GENERATED %s AS IDENTITY (SEQUENCE NAME %s %s)", kind, seq, seqOptions(s))
		default:
			serial = true
		}
	}
	return d, serial
}

// castColumns is the ALTER TABLE that gives the text-form columns of t
// their declared types (and then their defaults), or "" when t has none.
// typ and expr map a type name and a default expression to the schema
// the table is in.
func castColumns(t *pb.Table, table string, typ, expr func(string) string) string {
	var alters, defaults []string
	for _, c := range t.Columns {
		if _, castAfter, _ := targetType(c); castAfter {
			col := ident(c.GetName())
			ty := typ(c.GetDeclaredType())
			alters = append(alters, fmt.Sprintf("ALTER COLUMN %s TYPE %s USING %s::%s", col, ty, col, ty))
			if c.GetDefaultExpr() != "" {
				defaults = append(defaults, fmt.Sprintf("ALTER COLUMN %s SET DEFAULT %s", col, expr(c.GetDefaultExpr())))
			}
		}
	}
	if len(alters) == 0 {
		return ""
	}
	return "ALTER TABLE " + table + " " + strings.Join(append(alters, defaults...), ", ")
}

// constraintDef is the definition of constraint c of t: PostgreSQL's own,
// else one built from a portable snapshot's columns.
func constraintDef(t *pb.Table, c *pb.Constraint) (string, error) {
	def := c.GetPgDefinition()
	if def == "" {
		def = portableConstraint(c)
	}
	if def == "" {
		return "", fmt.Errorf("table %s: constraint %s has no definition", displayTable(t), c.GetName())
	}
	return def, nil
}

// indexDef is the CREATE INDEX of index ix of t, which is table, and
// whether it is PostgreSQL's own definition (which names the table
// itself) rather than one built from the index's columns.
func indexDef(t *pb.Table, ix *pb.Index, table string) (def string, own bool, err error) {
	if def := ix.GetPgDefinition(); def != "" {
		return def, true, nil
	}
	if len(ix.GetColumns()) == 0 {
		return "", false, fmt.Errorf("table %s: index %s has no definition", displayTable(t), ix.GetName())
	}
	u := ""
	if ix.GetUnique() {
		u = "UNIQUE "
	}
	return fmt.Sprintf("CREATE %sINDEX %s ON %s (%s)", u, ident(ix.GetName()), table, identList(ix.GetColumns())), false, nil
}

// addConstraint adds constraint c to table t.
func addConstraint(t *pb.Table, c *pb.Constraint, exec execFunc) error {
	def, err := constraintDef(t, c)
	if err != nil {
		return err
	}
	return exec(fmt.Sprintf("constraint %s on %s", c.GetName(), displayTable(t)),
		fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", qualified(t), ident(c.GetName()), def))
}

// addForeignKeys adds the foreign keys of every table, once the keys they
// reference exist.
func addForeignKeys(tables []*pb.Table, exec execFunc) error {
	for _, t := range tables {
		for _, c := range t.GetConstraints() {
			if c.GetKind() != pb.ConstraintKind_CONSTRAINT_KIND_FOREIGN_KEY {
				continue
			}
			if err := addConstraint(t, c, exec); err != nil {
				return err
			}
		}
	}
	return nil
}

// setSequences sets every owned sequence to the value the snapshot
// recorded.
func setSequences(tables []*pb.Table, exec execFunc) error {
	for _, t := range tables {
		for _, c := range t.Columns {
			s := c.GetSequence()
			if s == nil {
				continue
			}
			seq := ident(schemaOf(s.GetSchema()), s.GetName())
			if err := exec("set sequence "+seq, "SELECT pg_catalog.setval($1::pg_catalog.regclass, $2, $3)", seq, s.GetLastValue(), s.GetIsCalled()); err != nil {
				return err
			}
		}
	}
	return nil
}
