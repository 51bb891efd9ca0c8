import java.math.BigDecimal;
import java.sql.*;
import java.util.Properties;

/*
 * A JDBC client for test_jdbc.py: what Java applications do through a
 * pooler, printed one fact per line so the test can assert exact values.
 * Usage: java -cp postgresql.jar JdbcCheck.java URL USER PASSWORD
 */
public class JdbcCheck {
    static void out(String k, Object v) {
        System.out.println(k + "=" + v);
    }

    public static void main(String[] a) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", a[1]);
        p.setProperty("password", a[2]);
        // server-side prepared statements from the second execution on
        p.setProperty("prepareThreshold", "2");
        try (Connection c = DriverManager.getConnection(a[0], p)) {
            out("version", c.getMetaData().getDatabaseProductVersion().split("\\.")[0]);
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS jdbc_items");
                s.execute("CREATE TABLE jdbc_items (id int PRIMARY KEY, name text, price numeric(10,2), at timestamp)");
            }
            // a batch of inserts in one transaction
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_items VALUES (?, ?, ?, ?)")) {
                for (int i = 1; i <= 50; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "item " + i);
                    ps.setBigDecimal(3, new BigDecimal(i).multiply(new BigDecimal("1.25")));
                    ps.setTimestamp(4, Timestamp.valueOf("2024-02-29 12:00:00"));
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                out("batch", counts.length);
            }
            c.commit();
            // a rolled back change leaves no trace
            try (Statement s = c.createStatement()) {
                s.executeUpdate("DELETE FROM jdbc_items WHERE id > 10");
            }
            c.rollback();
            c.setAutoCommit(true);
            // the same prepared query many times: JDBC switches to a named
            // server-side statement, which must survive transaction pooling
            long sum = 0;
            try (PreparedStatement ps = c.prepareStatement("SELECT name, price FROM jdbc_items WHERE id = ?")) {
                for (int i = 1; i <= 20; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (!rs.getString(1).equals("item " + i)) throw new AssertionError(rs.getString(1));
                        sum += rs.getBigDecimal(2).multiply(new BigDecimal(100)).longValue();
                    }
                }
            }
            out("sum_cents", sum);
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(
                    "SELECT count(*), max(at), sum(price) FROM jdbc_items")) {
                rs.next();
                out("count", rs.getLong(1));
                out("max_at", rs.getTimestamp(2));
                out("total", rs.getBigDecimal(3));
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT 1/0");
            } catch (SQLException e) {
                out("error", e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SHOW search_path")) {
                rs.next();
                out("search_path", rs.getString(1));
            }
            try (ResultSet rs = c.getMetaData().getColumns(null, "public", "jdbc_items", null)) {
                StringBuilder b = new StringBuilder();
                while (rs.next()) b.append(rs.getString("COLUMN_NAME")).append(',');
                out("columns", b);
            }
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE jdbc_items");
            }
        }
        out("done", true);
    }
}
