package example;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Places an order and waits for credit-sentinel's decision on it, as an order pipeline does.
 *
 * <p>The order ({@code order.placed}) goes to {@code credit.orders} keyed by the customer, so a
 * customer's events stay in order on one partition, from an idempotent producer ({@code
 * acks=all}, no duplicates on retry). The decisions topic is read with {@code
 * isolation.level=read_committed} (only decisions the engine committed) from its end as it was
 * before the order was sent, so the decision cannot slip past, until the decision for this
 * {@code order_id} arrives or the timeout passes.
 *
 * <p>Prints the decision (one JSON line); exits 0 when it is {@code approved}, 1 when it is held
 * or rejected (its reasons say why), 2 when none came in time.
 */
public final class PlaceOrder {
  public static void main(String[] argv) throws Exception {
    Map<String, String> a = new java.util.HashMap<>(Map.of(
        "--bootstrap", "localhost:9092", "--currency", "EUR", "--timeout", "30",
        "--orders-topic", "credit.orders", "--decisions-topic", "credit.decisions"));
    for (int i = 0; i + 1 < argv.length; i += 2) {
      a.put(argv[i], argv[i + 1]);
    }
    for (String required : List.of("--customer", "--order-id", "--amount")) {
      if (!a.containsKey(required)) {
        System.err.println("usage: PlaceOrder --customer ID --order-id ID --amount 1250.00"
            + " [--currency EUR] [--bootstrap HOST:PORT] [--timeout SECONDS]");
        System.exit(2);
      }
    }
    System.exit(run(a));
  }

  static int run(Map<String, String> a) throws Exception {
    ObjectMapper json = new ObjectMapper();
    String orderId = a.get("--order-id");
    String customer = a.get("--customer");

    Properties c = new Properties();
    c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("--bootstrap"));
    c.put(ConsumerConfig.GROUP_ID_CONFIG, "place-order-" + UUID.randomUUID());
    c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("--bootstrap"));
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    p.put(ProducerConfig.ACKS_CONFIG, "all");

    try (KafkaConsumer<String, String> consumer =
            new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer());
        KafkaProducer<String, String> producer =
            new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
      // Every partition of the decisions topic, from its end before the order is sent (no
      // group subscription: nothing to rebalance, nothing to commit).
      List<TopicPartition> parts = new ArrayList<>();
      for (PartitionInfo info : consumer.partitionsFor(a.get("--decisions-topic"))) {
        parts.add(new TopicPartition(info.topic(), info.partition()));
      }
      consumer.assign(parts);
      consumer.seekToEnd(parts);
      for (TopicPartition tp : parts) {
        consumer.position(tp); // resolve the end now, before the order exists
      }

      ObjectNode order = json.createObjectNode();
      // The same event_id on a resend is a duplicate to the engine, not a second order.
      order.put("event_id", "order-placed-" + orderId);
      order.put("type", "order.placed");
      order.put("occurred_at", Instant.now().truncatedTo(ChronoUnit.MILLIS).toString());
      order.put("customer_id", customer);
      order.put("order_id", orderId);
      order.put("amount", a.get("--amount")); // a decimal string: money is never a float
      order.put("currency", a.get("--currency"));
      producer.send(new ProducerRecord<>(a.get("--orders-topic"), customer,
          json.writeValueAsString(order))).get();

      long deadline = System.nanoTime()
          + Duration.ofMillis((long) (Double.parseDouble(a.get("--timeout")) * 1000)).toNanos();
      while (System.nanoTime() < deadline) {
        for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
          JsonNode decision = json.readTree(r.value());
          if (!orderId.equals(decision.path("order_id").asText())) {
            continue; // another order's decision
          }
          System.out.println(json.writeValueAsString(decision));
          return "approved".equals(decision.path("status").asText()) ? 0 : 1;
        }
      }
    }
    System.err.println("no decision for " + orderId + " within " + a.get("--timeout") + " s");
    return 2;
  }

  private PlaceOrder() {}
}
